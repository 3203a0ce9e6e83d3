"""Which boxes show the same lesion, in two sets of boxes: two frames of a video (pseudo-labels'
neighbour rules) or two models on one frame (the teacher-student disagreement of
``distill.hard_frames``). The IoU of each pair where the classes agree and 0 where they differ, so
that one threshold decides: two lesions of different classes are never the same one."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def same_class_iou(boxes: np.ndarray, labels: np.ndarray, other: np.ndarray, other_labels: np.ndarray) -> np.ndarray:
    """(len(boxes), len(other)) IoU of x1y1x2y2 boxes, 0 between boxes of different classes."""
    iou = box_iou(torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4),
                  torch.as_tensor(np.asarray(other), dtype=torch.float32).reshape(-1, 4)).numpy()
    iou[np.asarray(labels).reshape(-1)[:, None] != np.asarray(other_labels).reshape(-1)[None, :]] = 0.0
    return iou
