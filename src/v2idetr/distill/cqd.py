"""Cross-view Query Distillation (DESIGN 2.3).

The frozen teacher's decoder queries (content + reference boxes) of the key frame are decoded by
the *student's* decoder on the student's memory; each output query is trained to agree with the
teacher's output for the same query, one to one (no matching):

- class: the Bernoulli KL divergence from the teacher's sigmoid probabilities to the student's
  (binary cross-entropy with the teacher's probabilities as soft targets, minus the teacher's own
  entropy, so it is 0 exactly when the two agree; same gradient as the BCE), summed over classes,
  averaged over queries;
- boxes: L1 + (1 - GIoU) on normalised cxcywh boxes, each query weighted by the teacher's
  confidence (max class probability), normalised by the sum of weights.

Every decoder layer is distilled against the teacher's same layer (auxiliary terms), when the
layer counts agree; otherwise only the last layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def _pair_loss(
    student: dict[str, Tensor], teacher: dict[str, Tensor], box_weight: float, giou_weight: float
) -> Tensor:
    t_logits = teacher["pred_logits"].detach()
    t_prob = t_logits.sigmoid()
    cross = F.binary_cross_entropy_with_logits(student["pred_logits"], t_prob, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(t_logits, t_prob, reduction="none")
    cls = (cross - entropy).sum(-1).mean()
    conf = t_prob.max(-1).values  # [B, Q]
    s_box, t_box = student["pred_boxes"], teacher["pred_boxes"].detach()
    l1 = (s_box - t_box).abs().sum(-1)
    giou = torch.diagonal(
        generalized_box_iou(
            box_convert(s_box.flatten(0, 1), "cxcywh", "xyxy"),
            box_convert(t_box.flatten(0, 1), "cxcywh", "xyxy"),
        )
    ).view_as(l1)
    norm = conf.sum().clamp(min=1e-6)
    box = (conf * (box_weight * l1 + giou_weight * (1 - giou))).sum() / norm
    return cls + box


class CQDLoss(nn.Module):
    """Agreement between student-decoded and teacher-decoded predictions of the same queries."""

    def __init__(self, box_weight: float = 5.0, giou_weight: float = 2.0, aux: bool = True):
        super().__init__()
        self.box_weight, self.giou_weight, self.aux = box_weight, giou_weight, aux

    def forward(self, student: dict[str, Any], teacher: dict[str, Any]) -> Tensor:
        """Both are decoder outputs (``pred_logits [B, Q, C]``, ``pred_boxes [B, Q, 4]``, ``aux_outputs``)
        for the same Q queries."""
        pairs = [(student, teacher)]
        s_aux, t_aux = student.get("aux_outputs", []), teacher.get("aux_outputs", [])
        if self.aux and len(s_aux) == len(t_aux):
            pairs += list(zip(s_aux, t_aux, strict=True))
        losses = [_pair_loss(s, t, self.box_weight, self.giou_weight) for s, t in pairs]
        return torch.stack(losses).mean()
