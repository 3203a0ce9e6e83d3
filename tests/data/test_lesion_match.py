"""`same_class_iou`: the overlap that decides whether two boxes show the same lesion."""

from __future__ import annotations

import numpy as np

from v2idetr.data.lesion_match import same_class_iou


def test_boxes_of_different_classes_never_overlap():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    other = np.array([[0, 0, 10, 5], [0, 0, 10, 10]], np.float32)
    iou = same_class_iou(boxes, np.array([0, 1]), other, np.array([0, 1]))
    np.testing.assert_allclose(iou, [[0.5, 0.0], [0.0, 0.0]])  # [0, 1]: the same box, another class
    assert same_class_iou(boxes, np.array([0, 0]), other[:0], np.zeros(0, np.int64)).shape == (2, 0)
    assert same_class_iou(other[:0], np.zeros(0, np.int64), boxes, np.array([0, 0])).shape == (0, 2)
