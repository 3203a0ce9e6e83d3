"""data.detection_fusion: several models' detections of a frame become one set, labelling by agreement."""

import numpy as np
import pytest

from v2idetr.data.detection_fusion import fuse_detections
from v2idetr.errors import ConfigError


def _dets(boxes, scores, labels=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {"boxes": boxes, "scores": np.asarray(scores, np.float32),
            "labels": np.asarray(labels if labels is not None else [0] * len(boxes), np.int64)}


def _sorted(frame):
    order = np.argsort(-frame["scores"])
    return {k: v[order] for k, v in frame.items()}


def test_two_models_boxes_of_one_lesion_become_their_score_weighted_mean_with_the_mean_score():
    a = {1: _dets([[10, 10, 30, 30]], [0.9])}
    b = {1: _dets([[12, 10, 32, 30]], [0.3])}
    fused = fuse_detections([a, b])[1]
    np.testing.assert_allclose(fused["boxes"], [[10.5, 10, 30.5, 30]], rtol=1e-6)
    np.testing.assert_allclose(fused["scores"], [0.6], rtol=1e-6)
    np.testing.assert_array_equal(fused["labels"], [0])


def test_a_lesion_one_model_of_three_found_keeps_a_third_of_its_score():
    sure = _dets([[10, 10, 30, 30]], [0.9])
    fused = fuse_detections([{1: sure}, {1: _dets([], [])}, {}])
    np.testing.assert_allclose(fused[1]["scores"], [0.3], rtol=1e-6)
    np.testing.assert_allclose(fused[1]["boxes"], sure["boxes"])


def test_boxes_of_different_classes_or_apart_or_of_the_same_model_stay_separate_lesions():
    a = {1: _dets([[10, 10, 30, 30], [11, 10, 31, 30], [60, 60, 80, 80]], [0.9, 0.8, 0.7])}
    b = {1: _dets([[10, 10, 30, 30], [60, 60, 80, 80]], [0.6, 0.5], labels=[0, 1])}
    fused = _sorted(fuse_detections([a, b])[1])
    # a's first box and b's first agree; a's second box overlaps them but is a's second: a lesion of its own;
    # b's second overlaps a's third exactly but is of another class
    np.testing.assert_allclose(fused["scores"], [0.75, 0.4, 0.35, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(fused["labels"], [0, 0, 0, 1])
    np.testing.assert_allclose(fused["boxes"][0], [10, 10, 30, 30])


def test_one_models_detections_pass_unchanged_and_none_is_an_error():
    a = {1: _dets([[10, 10, 30, 30]], [0.9]), 2: _dets([], [])}
    assert fuse_detections([a]) == a
    with pytest.raises(ConfigError, match="no model"):
        fuse_detections([])


def test_a_frame_only_one_model_saw_is_kept():
    fused = fuse_detections([{1: _dets([[10, 10, 30, 30]], [0.8])}, {2: _dets([[0, 0, 5, 5]], [0.4])}])
    assert sorted(fused) == [1, 2]
    np.testing.assert_allclose(fused[2]["scores"], [0.2], rtol=1e-6)
