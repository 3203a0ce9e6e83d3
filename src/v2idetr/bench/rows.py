"""The rows of `v2idetr bench accuracy`: one training recipe each, named as in its tables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """``kind``: ``train`` (from its own config), ``distill`` (from the same seed's ``teacher``) or
    ``view`` (no training: the same seed's ``teacher`` evaluated on less than its clips, ``view``)."""

    name: str
    kind: str
    config: str  # "student" | "teacher"
    overrides: tuple[str, ...]
    description: str
    steps_factor: int = 1  # training steps = factor x the benchmark's --steps
    # a distillation row's first weights: its config's (its teacher's by default), in a lineage the same
    # seed's baseline at step steps - student_steps ("baseline"), or the same seed's video teacher's
    # ("teacher": what a student of an image teacher starts from, so that only the teacher differs; a
    # training row continues its own ``teacher``'s weights so, for the teacher's steps: a second round)
    start: str = "config"
    # a distillation row's teacher: the same seed's video teacher, its image baseline ("baseline") or
    # another row's teacher; a training row with ``pseudo_labels``: whose pseudo-labels it trains on
    teacher: str = "teacher"
    # the training labels: the benchmark's (1 frame in --label-every labelled) or every frame's ("all")
    labels: str = "budget"
    # learns from the benchmark's archive of unlabelled videos too (--unlabelled-videos): distils on it
    # (data.unlabelled), or with ``pseudo_labels`` trains on its teacher's pseudo-labels of it
    archive: bool = False
    # a view row's `TeacherView` ("static" or "key-frame")
    view: str = "clip"
    # trains on the budget's training file with its teacher's detections as labels on the unlabelled frames
    # (`v2idetr pseudo-label`, written beside the run folder: bench/pseudo_label_data.py)
    pseudo_labels: bool = False
    # `v2idetr pseudo-label --temporal`: a confident box this many frames away confirms an in-between detection
    pseudo_temporal: int = 0
    # `v2idetr pseudo-label --interpolate`: a lesion sure this many frames before and after gets a box between
    pseudo_interpolate: int = 0

    @property
    def starts_from(self) -> str | None:
        """The row whose best weights ``start="teacher"`` starts this one from: a training row its own
        ``teacher`` (a second round), a distillation row the video teacher; None for any other start."""
        if self.start != "teacher":
            return None
        return self.teacher if self.kind == "train" else "teacher"


# the share of each batch that the student-unlabelled rows fill with unlabelled frames (on top of the labelled ones)
UNLABELLED = ("distill.unlabelled=0.5",)
# the -interpolated rows' `pseudo-label --interpolate G`: G = 2, 4 and 8 label about as many frames (one labelled
# frame in 10, docs/RESULTS.md, "an archive of 200 videos, with its true labels and with the teacher's")
INTERPOLATE = 4


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("baseline", "train", "student", (), "image detector, detection loss only"),
        Row("baseline-2x", "train", "student", (),
            "image detector, twice the steps: as many as teacher + teacher-initialised student (control)",
            steps_factor=2),
        Row("baseline-all-labels", "train", "student", (),
            "image detector trained with every training frame labelled: the ceiling of the label budget",
            labels="all"),
        Row("teacher", "train", "teacher", (), "video teacher, MSI"),
        Row("teacher-mean", "train", "teacher", ("model.temporal=mean",), "video teacher, frame averaging (no MSI)"),
        Row("teacher-static", "view", "teacher", (),
            "the video teacher on its key frame repeated T times (evaluated, not trained): what one frame tells it, "
            "the most a student that copies it frame by frame can inherit", view="static"),
        Row("teacher-key-frame", "view", "teacher", (),
            "the video teacher's image detector alone (evaluated, not trained): where its students start",
            view="key-frame"),
        Row("student-init-only", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student from the teacher's weights, no distillation loss (control)"),
        Row("student-all-labels", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student-init-only on every training frame's true labels (synthetic or fully labelled data): what labels "
            "could give the teacher's single-frame student in its steps, the ceiling of the rows that learn from the "
            "unlabelled frames", labels="all"),
        Row("student-init-only-image-teacher", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student-init-only from the image baseline's weights: the baseline trained the students' steps more on "
            "the labelled frames (what those extra steps alone give)", teacher="baseline"),
        # Distillation rows switch terms off and otherwise keep the config's weights, so they follow
        # the defaults (docs/METHOD.md) and any weight given on the command line.
        Row("student-tfd", "distill", "student", ("distill.cqd=0.0",), "student, TFD only"),
        Row("student-cqd", "distill", "student", ("distill.tfd=0.0",), "student, CQD only"),
        Row("student", "distill", "student", (), "student, TFD + CQD (on the labelled frames only, as the paper)"),
        Row("student-unlabelled", "distill", "student", UNLABELLED,
            "student, TFD + CQD, half of every batch unlabelled frames (the teacher's detections mask TFD there, "
            "no detection loss)"),
        Row("student-unlabelled-image-teacher", "distill", "student", (*UNLABELLED, "distill.init_from_teacher=false"),
            "student-unlabelled taught by the image baseline instead (self-training), from the same start: what "
            "the temporal context adds", start="teacher", teacher="baseline"),
        Row("student-unlabelled-static-teacher", "distill", "student", (*UNLABELLED, "distill.teacher_view=static"),
            "student-unlabelled whose teacher sees its key frame T times: its per-frame transform without the "
            "temporal context"),
        Row("student-unlabelled-residual", "distill", "student", (*UNLABELLED, "distill.tfd_target=residual"),
            "student-unlabelled with TFD towards the start plus the teacher's clip-minus-static residual"),
        Row("student-unlabelled-class-norm", "distill", "student", (*UNLABELLED, "distill.cqd_class_norm=teacher"),
            "student-unlabelled with CQD's class term per teacher detection"),
        Row("student-pseudo-labels", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student from the teacher's weights, detection loss on the labelled frames and on the teacher's "
            "pseudo-labels of the unlabelled ones (`v2idetr pseudo-label`: boxes >= 0.5, frames with a detection in "
            "[0.2, 0.5) left out)", pseudo_labels=True),
        Row("student-pseudo-labels-temporal", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student-pseudo-labels whose teacher's in-between detections (scored in [0.2, 0.5)) count as boxes where a "
            "confident box at most 2 frames away confirms them (`pseudo-label --temporal 2`)", pseudo_labels=True,
            pseudo_temporal=2),
        Row("student-pseudo-labels-interpolated", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            f"student-pseudo-labels where a lesion that sure boxes show at most {INTERPOLATE} frames before and "
            "after gets the interpolated box on the frames between, even where the teacher missed it (`pseudo-label "
            f"--interpolate {INTERPOLATE}`)", pseudo_labels=True, pseudo_interpolate=INTERPOLATE),
        Row("student-pseudo-labels-image-teacher", "distill", "student",
            ("distill.tfd=0.0", "distill.cqd=0.0", "distill.init_from_teacher=false"),
            "student-pseudo-labels with the image baseline's pseudo-labels instead (self-training), from the same "
            "start: what the temporal context adds", start="teacher", teacher="baseline", pseudo_labels=True),
        Row("student-archive", "distill", "student", UNLABELLED,
            "student, TFD + CQD, half of every batch frames of the archive of unlabelled videos (taught by the video "
            "teacher alone there)", archive=True),
        Row("student-archive-image-teacher", "distill", "student", (*UNLABELLED, "distill.init_from_teacher=false"),
            "student-archive taught by the image baseline instead (plain self-training on the archive), from the same "
            "start", start="teacher", teacher="baseline", archive=True),
        Row("student-archive-pseudo-labels", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student-pseudo-labels with the archive's videos too, pseudo-labelled by the video teacher alike "
            "(`data merge`)", pseudo_labels=True, archive=True),
        Row("student-archive-pseudo-labels-interpolated", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            f"student-archive-pseudo-labels with `pseudo-label --interpolate {INTERPOLATE}` (as "
            "student-pseudo-labels-interpolated)", pseudo_labels=True, archive=True, pseudo_interpolate=INTERPOLATE),
        # the archive through a second-round teacher (docs/RESULTS.md, "better labels for the archive"): the one
        # way found to carry it to a student at one labelled frame in 10
        Row("teacher-archive-round2", "train", "teacher", (),
            "the video teacher trained a second round, from its weights, on its own pseudo-labels of the unlabelled "
            "training frames and the archive (as student-archive-pseudo-labels-interpolated)", start="teacher",
            pseudo_labels=True, archive=True, pseudo_interpolate=INTERPOLATE),
        Row("student-archive-round2", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student-init-only from teacher-archive-round2: its weights, the labelled frames",
            teacher="teacher-archive-round2"),
        Row("student-archive-pseudo-labels-image-teacher", "distill", "student",
            ("distill.tfd=0.0", "distill.cqd=0.0", "distill.init_from_teacher=false"),
            "student-archive-pseudo-labels with the image baseline's pseudo-labels (self-training on the archive), "
            "from the same start", start="teacher", teacher="baseline", pseudo_labels=True, archive=True),
        # their control: the same two rounds for the image baseline (self-training), the recipe without the clip
        Row("baseline-archive-round2", "train", "student", (),
            "the image baseline trained a second round, from its weights, on its own pseudo-labels of the unlabelled "
            "training frames and the archive (as teacher-archive-round2: self-training)", start="teacher",
            teacher="baseline", pseudo_labels=True, archive=True, pseudo_interpolate=INTERPOLATE),
        Row("student-archive-round2-image-teacher", "distill", "student", ("distill.tfd=0.0", "distill.cqd=0.0"),
            "student-archive-round2 from baseline-archive-round2: its weights, the labelled frames",
            teacher="baseline-archive-round2"),
        Row("student-no-proposals", "distill", "student", ("distill.cqd_proposals=0.0",),
            "student, TFD + CQD without CQD's proposal term (this code's addition: docs/METHOD.md)"),
        Row("student-own-queries", "distill", "student", ("distill.cqd_student_queries=1.0",),
            "student, TFD + CQD with CQD's student-query term (the teacher judges the student's own queries)"),
        Row("student-from-baseline", "distill", "student", ("distill.init_from_teacher=false",),
            "student, TFD + CQD, from the baseline's weights student-steps before its end (lineage only): "
            "the baseline's last steps with the distillation terms added",
            start="baseline"),
        Row("student-hard-frames", "distill", "student", ("distill.hard_frames=0.5", "distill.hard_frames_strata=none"),
            "student, TFD + CQD, half the samples drawn where teacher and student disagree most (one excess over "
            "all frames: lesion-free frames drawn less often)"),
        Row("student-hard-frames-init-only", "distill", "student",
            ("distill.hard_frames=0.5", "distill.hard_frames_strata=none", "distill.tfd=0.0", "distill.cqd=0.0"),
            "student from the teacher's weights, student-hard-frames' sampling, no distillation loss (control)"),
        Row("student-chosen-frames", "distill", "student", ("distill.hard_frames=0.8",),
            "student, TFD + CQD, 80% of the samples drawn where teacher and student disagree most, within the "
            "frames the teacher detects a lesion in and within the rest (each keeps its share)"),
        Row("student-chosen-frames-init-only", "distill", "student",
            ("distill.hard_frames=0.8", "distill.tfd=0.0", "distill.cqd=0.0"),
            "student from the teacher's weights, student-chosen-frames' sampling, no distillation loss (control)"),
        Row("student-chosen-negatives", "distill", "student",
            ("distill.hard_frames=0.8", "distill.hard_frames_strata=teacher-negatives"),
            "student, TFD + CQD, 80% of the samples of the frames the teacher sees no lesion in drawn where the "
            "student fires and the teacher does not; the lesion frames drawn uniformly, each group keeps its share"),
        Row("student-degraded-view", "distill", "student", ("distill.student_degrade=0.5",),
            "student, TFD + CQD, half the key frames degraded for the student only (the teacher sees them clean)"),
        Row("student-degraded-view-init-only", "distill", "student",
            ("distill.student_degrade=0.5", "distill.tfd=0.0", "distill.cqd=0.0"),
            "student from the teacher's weights, the same degraded key frames, no distillation loss (control: "
            "the augmentation alone)"),
        Row("student-binary-mask", "distill", "student", ("distill.tfd_mask=binary",), "student, binary TFD mask"),
        Row("student-full-mask", "distill", "student", ("distill.tfd_mask=full",),
            "student, TFD over every pixel (background, look-alikes and lesion-free frames too)"),
        Row("student-fixed-sampling", "distill", "student", ("distill.cqd_sampling=fixed",),
            "student, fixed cross-view sampling"),
    )
}


def uses_archive(name: str) -> bool:
    """Whether a row learns from the archive of unlabelled videos, itself or through the row it starts
    or learns from (student-archive-round2 through its teacher)."""
    row = ROWS[name]
    return row.archive or (row.teacher != name and row.teacher in ROWS and uses_archive(row.teacher))


def default_rows(archive: bool = False) -> tuple[str, ...]:
    """Every row; the archive rows only when there is an archive of unlabelled videos to distil on."""
    return tuple(name for name in ROWS if archive or not uses_archive(name))
