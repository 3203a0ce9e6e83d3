"""Teacher-chosen training frames: the disagreement measure, the sampling weights, and a run that uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from v2idetr import api
from v2idetr.config import load_config
from v2idetr.distill.hard_frames import (
    WEIGHTS_FILE,
    FrameScore,
    frame_disagreement,
    one_way_disagreement,
    sampling_weights,
    teacher_groups,
)
from v2idetr.engine.trainer import Trainer
from v2idetr.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def dets(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None) -> dict[str, np.ndarray]:
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.array(scores, dtype=np.float32),
            "labels": np.array(labels if labels is not None else [0] * len(scores), dtype=np.int64)}


def test_disagreement_is_the_largest_score_gap_between_matched_detections() -> None:
    lesion, elsewhere = [10, 10, 30, 30], [60, 60, 80, 80]
    teacher = dets([lesion], [0.9])
    assert one_way_disagreement(teacher, dets([], [])) == pytest.approx(0.9)  # missed: the student gives 0
    assert one_way_disagreement(teacher, dets([lesion, elsewhere], [0.6, 0.95])) == pytest.approx(0.3)
    assert one_way_disagreement(teacher, dets([[10, 10, 30, 55]], [0.9])) == pytest.approx(0.9)  # IoU < 0.5
    assert one_way_disagreement(teacher, dets([lesion], [0.9], [1])) == pytest.approx(0.9)  # another class
    assert one_way_disagreement(teacher, dets([lesion], [0.95])) == 0.0  # the student more sure: no deficit
    # a false alarm only the student raises counts as much as a lesion only the teacher finds
    student = dets([lesion, elsewhere], [0.9, 0.7])
    assert frame_disagreement(teacher, student) == pytest.approx(0.7)
    assert frame_disagreement(student, teacher) == pytest.approx(0.7)
    assert frame_disagreement(teacher, teacher) == 0.0


def test_sampling_weights_mix_uniform_and_the_excess_over_the_median() -> None:
    d = np.array([0.2, 0.2, 0.2, 0.4, 0.8])  # median 0.2: excesses 0, 0, 0, 0.2, 0.6
    p = sampling_weights(d, 0.5)
    assert p.sum() == pytest.approx(1.0)
    assert p[:3] == pytest.approx([0.1, 0.1, 0.1])  # only the uniform half
    assert p[3:] == pytest.approx([0.1 + 0.5 * 0.25, 0.1 + 0.5 * 0.75])
    assert sampling_weights(d, 0.0) == pytest.approx(np.full(5, 0.2))
    assert sampling_weights(np.full(5, 0.3), 1.0) == pytest.approx(np.full(5, 0.2))  # no excess anywhere


def test_each_group_keeps_its_share_and_the_choice_acts_within_it() -> None:
    # frames 0-3: the teacher sees a lesion; 4-7: it does not. The lesion frames disagree more, which
    # without groups would take samples from the lesion-free ones.
    d = np.array([0.4, 0.4, 0.6, 1.0, 0.1, 0.1, 0.1, 0.5])
    groups = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = sampling_weights(d, 0.8, groups)
    assert p.sum() == pytest.approx(1.0)
    assert p[:4].sum() == pytest.approx(0.5) and p[4:].sum() == pytest.approx(0.5)
    # lesion group: median 0.5, excesses 0, 0, 0.1, 0.5; lesion-free group: median 0.1, excess only on 7
    assert p[:4] == pytest.approx([0.2 / 8, 0.2 / 8, 0.2 / 8 + 0.8 * 0.5 / 6, 0.2 / 8 + 0.8 * 0.5 * 5 / 6])
    assert p[4:7] == pytest.approx([0.2 / 8] * 3) and p[7] == pytest.approx(0.2 / 8 + 0.8 * 0.5)
    assert sampling_weights(d, 0.8)[4:].sum() < 0.5  # one excess over all frames: the lesion-free lose samples
    # a group without excess stays uniform, the other is still chosen within
    flat = sampling_weights(np.array([0.3, 0.3, 0.1, 0.9]), 1.0, np.array([0, 0, 1, 1]))
    assert flat == pytest.approx([0.25, 0.25, 0.0, 0.5])
    # the choice only among the frames the teacher sees no lesion in: the lesion frames stay uniform
    negatives = sampling_weights(d, 0.8, groups, chosen={0})
    assert negatives[:4] == pytest.approx([1 / 8] * 4) and negatives[4:] == pytest.approx(p[4:])


def test_groups_follow_the_teachers_verdict_at_the_protocol_threshold() -> None:
    scores = [FrameScore(0.5, 0.29), FrameScore(0.1, 0.3), FrameScore(0.9, 0.95)]
    assert teacher_groups(scores, "teacher", 0.3).tolist() == [0, 1, 1]
    assert teacher_groups(scores, "none", 0.3) is None


def test_the_trainer_samples_by_frame_weight(tiny_synth, tiny_model, tmp_path) -> None:
    cfg = load_config(ROOT / "configs" / "student-tiny.yaml", [*tiny_model, f"data.train={tiny_synth.train_json}"])
    index = api.load_dataset(cfg, cfg.data.train, "train")
    chosen = index.videos[1].frames[3].image_id
    weights = {f.image_id: float(f.image_id == chosen) for v in index.videos for f in v.frames}
    trainer = Trainer(cfg, None, None, None, index, None, tmp_path, {}, frame_weights=weights)  # type: ignore[arg-type]
    loader, sampler = trainer._loader()
    sampler.set_epoch(0)
    keys = loader.dataset.key_frames  # type: ignore[attr-defined]
    assert {keys[i].image_id for _, i in sampler} == {chosen}  # (epoch, index) pairs
    del weights[chosen]
    with pytest.raises(Exception, match=f"image ids \\[{chosen}\\]"):
        trainer._loader()


def test_distill_scores_every_frame_once_and_resumes_with_the_same_weights(tiny_synth, tiny_model, tmp_path,
                                                                           teacher_ckpt) -> None:
    out = tmp_path / "s"
    student_cfg = str(ROOT / "configs" / "student-tiny.yaml")
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", "train.eval_every=0", "distill.hard_frames=0.5"]
    api.distill(teacher_ckpt, student_cfg, [*overrides, "train.steps=1"], out, progress=False)
    record = json.loads((out / WEIGHTS_FILE).read_text())
    cfg = load_config(student_cfg, overrides)
    train_ids = {f.image_id for v in api.load_dataset(cfg, cfg.data.train, "train").videos for f in v.frames}
    assert {f["image_id"] for f in record["frames"]} == train_ids
    scores = [f["disagreement"] for f in record["frames"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores) and scores[0] > 0
    assert record["strata"] == "teacher" and all(0.0 <= f["teacher_score"] <= 1.0 for f in record["frames"])
    # resuming reads the weights back (the student has moved on; scoring it again would change them)
    (out / WEIGHTS_FILE).write_text(json.dumps({**record, "frames": [{**f, "disagreement": 0.5}
                                                                      for f in record["frames"]]}))
    api.distill(teacher_ckpt, student_cfg, [*overrides, "train.steps=2"], out, resume=True, progress=False)
    assert {f["disagreement"] for f in json.loads((out / WEIGHTS_FILE).read_text())["frames"]} == {0.5}
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE} is missing"):
        api.distill(teacher_ckpt, student_cfg, [*overrides, "train.steps=3"], out, resume=True, progress=False)


def test_with_unlabelled_frames_the_choice_acts_on_them_only(tiny_synth, tiny_model, tmp_path) -> None:
    """distill.unlabelled > 0: the labelled frames keep a uniform draw, the unlabelled ones are chosen."""
    from v2idetr.distill.hard_frames import teacher_chosen_weights, write_weights

    cfg = load_config(ROOT / "configs" / "student-tiny.yaml",
                      [*tiny_model, f"data.train={tiny_synth.train_json}", "distill.hard_frames=0.8",
                       "distill.hard_frames_strata=none", "distill.unlabelled=0.5"])
    index = api.load_dataset(cfg, cfg.data.train, "train")
    frames = list(index.frames())
    for f in frames[1::2]:
        f.labelled, f.boxes, f.labels = False, f.boxes[:0], f.labels[:0]
    hard = {frames[0].image_id, frames[1].image_id}  # one labelled, one unlabelled frame disagree most
    scores = {f.image_id: FrameScore(0.9 if f.image_id in hard else 0.1, 0.5) for f in frames}
    write_weights(tmp_path / WEIGHTS_FILE, 0.8, "none", index, scores)
    weights = teacher_chosen_weights(tmp_path, True, cfg, None, None, None, index, None)  # type: ignore[arg-type]
    labelled = [weights[f.image_id] for f in frames if f.labelled]
    unlabelled = {f.image_id: weights[f.image_id] for f in frames if not f.labelled}
    assert len(set(labelled)) == 1  # uniform, the hard labelled frame included
    assert unlabelled[frames[1].image_id] > 10 * min(unlabelled.values())
