"""Pseudo-labels: a model's detections as labels on the unlabelled frames (``pseudo_label``), and their
refusal wherever a number is reported or a checkpoint chosen. The command: tests/test_pseudo_label_command.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr import api
from v2idetr.config import load_config
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.data.pseudo_labels import PSEUDO_FRAME, pseudo_label
from v2idetr.engine.evaluator import evaluate
from v2idetr.errors import ConfigError, DatasetError


def five_frames(root: Path | None = None) -> DatasetIndex:
    """One 64 x 48 video: frame 1 labelled with a box, frames 2-5 unlabelled (PNGs written under ``root``)."""
    frames = [FrameRecord(i, 1, i, (root or Path()) / f"v/{i}.png", 64, 48) for i in range(1, 6)]
    if root is not None:
        (root / "v").mkdir()
        for f in frames:
            Image.new("RGB", (64, 48)).save(f.path)
    frames[0].boxes, frames[0].labels = np.array([[1, 1, 9, 9]], np.float32), np.array([0])
    for f in frames[1:]:
        f.labelled = False
    return DatasetIndex([VideoRecord(1, "v", frames)], ["lesion", "other"], [1, 2])


def det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, np.ndarray]:
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float32),
            "labels": np.array(labels, np.int64)}


def test_confident_frames_get_boxes_ambiguous_ones_stay_unlabelled():
    index = five_frames()
    predictions = {
        1: det([[30, 30, 40, 40]], [0.99], [1]),  # a human-labelled frame: never changed
        2: det([[10, 10, 20, 20], [50, 40, 70, 60], [70, 10, 80, 20], [0, 0, 5, 5]], [0.9, 0.6, 0.8, 0.1],
               [1, 0, 0, 0]),  # sure (one of them outside the frame: dropped) + faint
        3: det([[10, 10, 20, 20], [30, 30, 40, 40]], [0.9, 0.3], [0, 0]),  # one in [0.2, 0.5): ambiguous
        4: det([[10, 10, 20, 20]], [0.05], [0]),  # only faint: a negative
    }  # frame 5: no detection at all: a negative
    out, n = pseudo_label(index, predictions, score=0.5, ambiguous=0.2)
    frames = out.frame_by_image_id()
    assert (n.labelled, n.negatives, n.boxes, n.ambiguous, n.human) == (3, 2, 2, 1, 1)
    assert frames[1].boxes.tolist() == [[1, 1, 9, 9]] and PSEUDO_FRAME not in frames[1].extra
    assert frames[2].labelled and frames[2].extra[PSEUDO_FRAME] is True
    np.testing.assert_allclose(frames[2].boxes, [[10, 10, 20, 20], [50, 40, 64, 48]])  # clipped to the frame
    assert frames[2].labels.tolist() == [1, 0]
    assert [b["score"] for b in frames[2].box_extra] == [0.9, 0.6] and all(b["pseudo_label"] for b in frames[2].box_extra)
    assert not frames[3].labelled and len(frames[3].boxes) == 0
    assert frames[4].is_negative and frames[5].is_negative
    assert index.num_unlabelled_frames == 4  # the input is not modified


def test_equal_thresholds_leave_no_frame_ambiguous():
    predictions = {3: det([[10, 10, 20, 20], [30, 30, 40, 40]], [0.9, 0.3], [0, 0])}
    out, n = pseudo_label(five_frames(), predictions, score=0.5, ambiguous=0.5)
    assert n.ambiguous == 0 and out.num_unlabelled_frames == 0
    assert len(out.frame_by_image_id()[3].boxes) == 1


def test_a_confident_neighbour_confirms_an_in_between_detection():
    """--temporal R: an in-between detection that overlaps a confident box of the same class at most R frames
    away (a human box or a detection >= score) is kept; another class, a box elsewhere or a neighbour too far
    away does not confirm it; R = 0 is the plain rule."""
    predictions = {
        2: det([[1, 1, 9, 9]], [0.3], [0]),  # next to frame 1's human box (same class): confirmed
        # frame 4's sure box confirms the first; the second only frame 1's human box, 2 frames away (frame 2's
        # box is in between too, so it confirms nothing)
        3: det([[30, 30, 40, 40], [2, 2, 10, 10]], [0.3, 0.35], [0, 0]),
        4: det([[30, 31, 40, 41], [50, 30, 60, 40]], [0.8, 0.3], [0, 1]),  # frame 5's sure box is of class 0
        5: det([[50, 30, 60, 40], [31, 30, 41, 40]], [0.9, 0.25], [0, 0]),  # frame 4's sure box confirms the 2nd
    }
    plain, n0 = pseudo_label(five_frames(), predictions, score=0.5, ambiguous=0.2)
    assert n0.ambiguous == 4 and n0.confirmed == 0 and plain.num_unlabelled_frames == 4
    out, n = pseudo_label(five_frames(), predictions, score=0.5, ambiguous=0.2, temporal=1)
    frames = out.frame_by_image_id()
    assert frames[2].labelled and frames[2].boxes.tolist() == [[1, 1, 9, 9]]
    assert frames[2].box_extra == [{"pseudo_label": True, "score": 0.3}]
    assert not frames[3].labelled  # R = 1: frame 1 is too far away for its second box
    assert not frames[4].labelled  # the class-1 box next to frame 5's class-0 box is not confirmed
    assert frames[5].labelled and len(frames[5].boxes) == 2
    assert (n.labelled, n.ambiguous, n.confirmed) == (2, 2, 2)
    assert out.info["pseudo_labels"]["temporal"] == 1 and "temporal" not in plain.info["pseudo_labels"]
    wider, n2 = pseudo_label(five_frames(), predictions, score=0.5, ambiguous=0.2, temporal=2)
    assert wider.frame_by_image_id()[3].labelled and n2.ambiguous == 1  # frame 1's human box, 2 frames away
    with pytest.raises(ConfigError, match="temporal = -1"):
        pseudo_label(five_frames(), predictions, temporal=-1)


def test_a_lesion_sure_on_both_sides_is_interpolated_where_the_teacher_missed_it():
    """--interpolate G: a lesion that sure boxes (a human's or detections >= score, same class, overlapping) show
    on the nearest sure frame before and after, each at most G away, gets the interpolated box on the frame
    between; an in-between detection on it keeps its own box; a human's negative frame stops the search."""
    predictions = {
        3: det([[2, 1, 10, 9]], [0.9], [0]),  # frame 2 (nothing detected) lies between it and frame 1's human box
        4: det([[3, 1, 11, 9]], [0.3], [0]),  # in between, on the lesion that frames 3 and 5 show
        5: det([[4, 1, 12, 9], [40, 30, 50, 40]], [0.8, 0.9], [0, 1]),  # the second: no partner on frame 3
    }
    plain, n0 = pseudo_label(five_frames(), predictions, score=0.5, ambiguous=0.2)
    assert plain.frame_by_image_id()[2].is_negative and n0.ambiguous == 1 and n0.interpolated == 0
    out, n = pseudo_label(five_frames(), predictions, score=0.5, ambiguous=0.2, interpolate=1)
    frames = out.frame_by_image_id()
    np.testing.assert_allclose(frames[2].boxes, [[1.5, 1, 9.5, 9]])  # halfway between frames 1 and 3
    assert frames[2].box_extra == [{"pseudo_label": True, "interpolated": True}] and frames[2].labels.tolist() == [0]
    assert frames[4].boxes.tolist() == [[3, 1, 11, 9]] and frames[4].box_extra == [{"pseudo_label": True, "score": 0.3}]
    assert (n.labelled, n.ambiguous, n.interpolated, n.confirmed) == (4, 0, 1, 1)
    assert out.info["pseudo_labels"]["interpolate"] == 1 and "interpolate" not in plain.info["pseudo_labels"]

    gap = {2: det([[1, 1, 13, 9]], [0.9], [0]), 5: det([[4, 1, 16, 9]], [0.9], [0])}  # frames 3 and 4 missed
    near, _ = pseudo_label(five_frames(), gap, interpolate=1)
    assert near.frame_by_image_id()[3].is_negative  # frame 5 is 2 frames away
    far, n2 = pseudo_label(five_frames(), gap, interpolate=2)
    np.testing.assert_allclose(far.frame_by_image_id()[3].boxes, [[2, 1, 14, 9]], rtol=1e-6)
    np.testing.assert_allclose(far.frame_by_image_id()[4].boxes, [[3, 1, 15, 9]], rtol=1e-6)
    assert n2.interpolated == 2
    other_class = {**gap, 5: det([[4, 1, 16, 9]], [0.9], [1])}
    assert pseudo_label(five_frames(), other_class, interpolate=2)[1].interpolated == 0

    stopped = five_frames()
    stopped.videos[0].frames[2].labelled = True  # frame 3: a person saw no lesion there
    out, n3 = pseudo_label(stopped, gap, interpolate=2)
    assert out.frame_by_image_id()[4].is_negative and n3.interpolated == 0
    with pytest.raises(ConfigError, match="interpolate = -1"):
        pseudo_label(five_frames(), predictions, interpolate=-1)


@pytest.mark.parametrize(("score", "ambiguous"), [(0.0, 0.0), (0.5, 0.6), (1.5, 0.2), (0.5, -0.1)])
def test_bad_thresholds_are_refused(score, ambiguous):
    with pytest.raises(ConfigError, match="pseudo-label"):
        pseudo_label(five_frames(), {}, score=score, ambiguous=ambiguous)


def test_pseudo_labels_are_refused_for_validation_and_evaluation(tmp_path):
    out, _ = pseudo_label(five_frames(tmp_path), {2: det([[10, 10, 20, 20]], [0.9], [0])})
    with pytest.raises(DatasetError, match="pseudo_labelled"):
        evaluate(out, {})
    evaluate(five_frames(), {})  # the same frames with human labels only are scored
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps(out.to_coco_vid(image_root=tmp_path)))
    with pytest.raises(DatasetError, match="data.val"):
        api.load_dataset(load_config(None), path, "val", split="test")
    train = api.load_dataset(load_config(None), path, "train")  # training on pseudo-labels is what they are for
    assert sum(f.extra.get(PSEUDO_FRAME, False) for f in train.frames()) == 4
