"""Teacher-chosen training frames: distil more often where the teacher and the student disagree.

The teacher's lead over a single-frame detector lies on few frames (degraded ones, look-alikes,
docs/RESULTS.md), which a uniform sampler shows the student as rarely as any other frame. Before
distillation, the frozen teacher (on its clips) and the starting student (on the key frame) both
detect on every training key frame, without augmentation; a frame's *disagreement* is the largest
score difference between a detection of one and the best-matching detection of the other (same
label, IoU >= ``MATCH_IOU``; no match counts as a score of 0). It is high where the teacher finds
a lesion the student misses, and where the student fires on something the teacher rejects. Every
frame has some, since the two models' scores are not calibrated alike (a student starting at the
teacher's detector scores most lesions lower without the support frames), so what counts is the
*excess* over the median frame's. With ``distill.hard_frames = h``, a share ``h`` of the training
samples is drawn in proportion to the excess and the rest uniformly. No labels are used: the
teacher alone says which frames matter.

Drawing all frames by one excess takes samples from the frames both models agree on, most of them
lesion-free, and the student then raises more false alarms there (docs/RESULTS.md). So by default
(``distill.hard_frames_strata = "teacher"``) the frames are split by the teacher's verdict: those it
detects a lesion in (a score >= the evaluation protocol's threshold) and those it does not. Each
group keeps its uniform share of the samples and the excess is taken over its own median, so the
choice moves samples among the lesion frames (towards degraded ones) and among the lesion-free ones
(towards those the student fires on), never from one group to the other. With
``"teacher-negatives"`` it acts among the lesion-free ones only: the lesion frames the teacher finds
and the student cannot (a lesion no single frame shows) are not drawn more often, since a student
taught to find a lesion where its frame shows none learns to raise false alarms.

With unlabelled frames in the batches (``distill.unlabelled``) the choice acts on the unlabelled
frames only: the labelled part of each batch stays a uniform draw for the detection loss, and the
unlabelled part goes where the teacher and the student disagree, the frames where the teacher has
something to teach (a look-alike it rejects, a degraded lesion it finds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from v2idetr.atomic import atomic_write_json
from v2idetr.config import Config, unlabelled_share
from v2idetr.data.index import DatasetIndex
from v2idetr.data.lesion_match import same_class_iou
from v2idetr.engine.inference import Predictions, build_eval_loader, is_labelled, predict_loader
from v2idetr.engine.metrics import resolve_protocol
from v2idetr.errors import CheckpointError
from v2idetr.models.postprocess import PostProcess

log = logging.getLogger(__name__)

MATCH_IOU = 0.5
WEIGHTS_FILE = "frame-weights.json"


@dataclass(frozen=True)
class FrameScore:
    """One training frame's scores: the two models' disagreement and the teacher's own best score."""

    disagreement: float
    teacher_score: float


def one_way_disagreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """max over ``a``'s detections of (its score - the best score ``b`` gives the same lesion), >= 0."""
    if len(a["scores"]) == 0:
        return 0.0
    best_b = np.zeros(len(a["scores"]), dtype=np.float64)
    if len(b["scores"]):
        same = same_class_iou(a["boxes"], a["labels"], b["boxes"], b["labels"]) >= MATCH_IOU
        best_b = np.where(same, b["scores"][None, :], 0.0).max(axis=1)
    return float(np.clip(a["scores"] - best_b, 0.0, None).max())


def frame_disagreement(teacher: dict[str, np.ndarray], student: dict[str, np.ndarray]) -> float:
    """Symmetric: what the teacher finds that the student misses, or the other way round."""
    return max(one_way_disagreement(teacher, student), one_way_disagreement(student, teacher))


def sampling_weights(disagreement: np.ndarray, share: float, groups: np.ndarray | None = None,
                     chosen: Collection[int] | None = None) -> np.ndarray:
    """Per-frame probabilities: within each group (all frames one group by default) that is among
    ``chosen`` (default: all), ``share`` of its samples in proportion to the disagreement's excess
    over the group's median frame, the rest uniform; every group keeps its uniform share
    ``n_group / n`` of all samples, and the groups not chosen stay uniform within."""
    n = len(disagreement)
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    probs = np.full(n, 1.0 / n)
    if share == 0.0:
        return probs
    for g in np.unique(groups):
        if chosen is not None and g not in chosen:
            continue
        member = groups == g
        excess = np.clip(disagreement[member] - np.median(disagreement[member]), 0.0, None)
        total = float(excess.sum())
        if total > 0.0:
            probs[member] = (1.0 - share) / n + share * (member.sum() / n) * excess / total
    return probs


# ``distill.hard_frames_strata`` -> the groups the choice acts in (None: all); group 1 holds the
# frames the teacher detects a lesion in, group 0 the rest
CHOSEN_GROUPS: dict[str, frozenset[int] | None] = {"teacher": None, "teacher-negatives": frozenset({0}), "none": None}


def teacher_groups(scores: list[FrameScore], strata: str, score_thresh: float) -> np.ndarray | None:
    """Group per frame for ``sampling_weights``: 1 where the teacher detects a lesion, 0 where not."""
    if strata == "none":
        return None
    return np.array([int(f.teacher_score >= score_thresh) for f in scores], dtype=np.int64)


def score_frames(teacher: nn.Module, teacher_cfg: Config, student: nn.Module, student_cfg: Config,
                 index: DatasetIndex, device: torch.device, progress: bool = True) -> dict[int, FrameScore]:
    """Scores per training key frame (``image_id``; unlabelled frames too when batches mix them in),
    from one prediction pass of each model."""
    def predict(model: nn.Module, cfg: Config, desc: str) -> Predictions:
        loader = build_eval_loader(cfg, index, batch_size=student_cfg.data.batch_size,
                                   keys=is_labelled if unlabelled_share(student_cfg) == 0 else None)
        return predict_loader(model, PostProcess(student_cfg.eval.num_select), loader, device, progress, desc)

    by_teacher = predict(teacher, teacher_cfg, "score frames: teacher")
    by_student = predict(student, student_cfg, "score frames: student")
    return {i: FrameScore(frame_disagreement(by_teacher[i], by_student[i]),
                          float(by_teacher[i]["scores"].max(initial=0.0))) for i in by_teacher}


def write_weights(path: Path, share: float, strata: str, index: DatasetIndex, scores: dict[int, FrameScore]) -> None:
    """Every frame's scores, hardest first, so a user can see which frames the teacher chose."""
    files = {f.image_id: f.file_name or str(f.path) for v in index.videos for f in v.frames}
    frames = sorted(scores.items(), key=lambda kv: -kv[1].disagreement)
    atomic_write_json(path, {
        "hard_frames": share,
        "strata": strata,
        "measure": f"max score difference between matched detections (IoU >= {MATCH_IOU}) of teacher and student",
        "frames": [{"image_id": i, "file": files.get(i, ""), "disagreement": round(f.disagreement, 6),
                    "teacher_score": round(f.teacher_score, 6)} for i, f in frames],
    }, indent=1)


def read_weights(path: Path) -> dict[int, FrameScore]:
    try:
        record = json.loads(path.read_text())
        return {int(f["image_id"]): FrameScore(float(f["disagreement"]), float(f["teacher_score"]))
                for f in record["frames"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: unreadable frame weights ({e}); expected the JSON `v2idetr distill` writes with "
            "distill.hard_frames > 0, each frame with 'image_id', 'disagreement' and 'teacher_score' "
            "(the resumed run needs the weights its first part sampled with)"
        ) from e


def summary(disagreement: np.ndarray, probs: np.ndarray, groups: np.ndarray | None) -> dict[str, Any]:
    """How concentrated the sampling is: the share of samples the hardest tenth of the frames gets,
    and the share of frames (and of samples) the teacher detects a lesion in."""
    tenth = max(1, len(probs) // 10)
    out = {"frames": len(probs), "mean_disagreement": float(disagreement.mean()),
           "top_tenth_share": float(np.sort(probs)[::-1][:tenth].sum())}
    if groups is not None:
        out["teacher_detects_frames"] = float((groups == 1).mean())
        out["teacher_detects_samples"] = float(probs[groups == 1].sum())
    return out


def teacher_chosen_weights(out_dir: Path, resuming: bool, student_cfg: Config, teacher: nn.Module,
                           teacher_cfg: Config, student: nn.Module, index: DatasetIndex, device: torch.device,
                           progress: bool = True) -> dict[int, float]:
    """Sampling probability per training ``image_id``: scored now with the starting student (and kept
    in ``out_dir``/``WEIGHTS_FILE``), or read back when resuming, whose student has moved on."""
    share, strata = student_cfg.distill.hard_frames, student_cfg.distill.hard_frames_strata
    path = out_dir / WEIGHTS_FILE
    if resuming:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the run being resumed was started without "
                                  "distill.hard_frames, or the file was deleted; resume with the same config")
        scores = read_weights(path)
    else:
        teacher.to(device)
        student.to(device)
        scores = score_frames(teacher, teacher_cfg, student, student_cfg, index, device, progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_weights(path, share, strata, index, scores)
    ids = list(scores)
    if unlabelled_share(student_cfg) > 0:
        # the labelled frames keep the detection loss's uniform draw; the choice spends the unlabelled part
        # of each batch where the teacher knows better
        unlabelled = {f.image_id for f in index.frames() if not f.labelled}
        chosen_ids = [i for i in ids if i in unlabelled]
    else:
        chosen_ids = ids
    values = np.array([scores[i].disagreement for i in chosen_ids])
    thresh = resolve_protocol(student_cfg.eval.protocol, student_cfg.eval.score_thresh).score_thresh
    groups = teacher_groups([scores[i] for i in chosen_ids], strata, thresh)
    probs = sampling_weights(values, share, groups, CHOSEN_GROUPS[strata])
    log.info("teacher-chosen frames: %s", json.dumps(summary(values, probs, groups)))
    weights = dict.fromkeys(ids, 1.0 / len(ids))
    weights.update(zip(chosen_ids, probs.tolist(), strict=True))
    return weights
