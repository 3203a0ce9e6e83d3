"""Cross-view Query Distillation (DESIGN 2.3).

The frozen teacher's decoder queries (content + reference boxes) of the key frame are decoded by
the *student's* decoder on the student's memory; each output query is trained to agree with the
teacher's output for the same query, one to one (no matching):

- class: the Bernoulli KL divergence from the teacher's sigmoid probabilities to the student's
  (binary cross-entropy with the teacher's probabilities as soft targets, minus the teacher's own
  entropy, so it is 0 exactly when the two agree; same gradient as the BCE), summed over classes,
  averaged over queries (``class_norm="queries"``), or summed over queries and divided by the
  teacher's foreground mass, the sum of its max class probabilities, at least 1
  (``class_norm="teacher"``: per detection, like the detection loss per box; the average over
  mostly empty queries made this term ~2% of the detection gradient);
- boxes: L1 + (1 - GIoU) on normalised cxcywh boxes, each query weighted by the teacher's
  confidence (max class probability), normalised by the sum of weights.

Every decoder layer is distilled against the teacher's same layer (auxiliary terms), when the
layer counts agree; otherwise only the last layer.

Proposal term (``proposal_weight > 0``; a gap this code fills, see docs/METHOD.md): in a two-stage
DETR the student picks its own queries at inference, the top-k tokens of its encoder's class
scores, so decoding the teacher's queries alone never teaches it *where to look*. The term is the
same Bernoulli KL between the teacher's and the student's dense encoder scores (every valid memory
token), summed and divided by the teacher's foreground mass (the sum over tokens of its max class
probability, at least 1), so a few confident tokens are not drowned by thousands of background ones.

Student-query term (``student_query_weight > 0``; the other direction of the cross-view, also this
code's addition): the teacher's queries only visit where the *teacher* looks, so a place only the
student proposes (a one-frame look-alike the teacher has learnt to reject) never gets the teacher's
verdict. Here the frozen teacher decodes the student's own queries (the teacher's learned contents, the
student's reference boxes) on the teacher's memory, and the student's own predictions for those
queries are trained to agree with that verdict, with the same per-query loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def bernoulli_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Element-wise KL(teacher || student) of independent sigmoid probabilities (0 where they agree).

    Binary cross-entropy with the (detached) teacher probabilities as soft targets, minus the
    teacher's own entropy: the same gradient as the BCE, but a value that reads as disagreement.
    """
    t_logits = teacher_logits.detach()
    t_prob = t_logits.sigmoid()
    cross = F.binary_cross_entropy_with_logits(student_logits, t_prob, reduction="none")
    return cross - F.binary_cross_entropy_with_logits(t_logits, t_prob, reduction="none")


def proposal_loss(student_enc: dict[str, Tensor], teacher_enc: dict[str, Tensor]) -> Tensor:
    """Dense two-stage score distillation: ``dense_logits [B, S, C]`` over tokens valid in both views."""
    valid = (student_enc["dense_valid"] & teacher_enc["dense_valid"]).to(student_enc["dense_logits"].dtype)
    kl = bernoulli_kl(student_enc["dense_logits"], teacher_enc["dense_logits"]).sum(-1)  # [B, S]
    mass = teacher_enc["dense_logits"].detach().sigmoid().max(-1).values
    return (kl * valid).sum() / (mass * valid).sum().clamp(min=1.0)


CLASS_NORMS = ("queries", "teacher")


def _pair_loss(
    student: dict[str, Tensor], teacher: dict[str, Tensor], box_weight: float, giou_weight: float,
    class_norm: str = "queries",
) -> Tensor:
    conf = teacher["pred_logits"].detach().sigmoid().max(-1).values  # [B, Q]
    kl = bernoulli_kl(student["pred_logits"], teacher["pred_logits"]).sum(-1)  # [B, Q]
    cls = kl.mean() if class_norm == "queries" else kl.sum() / conf.sum().clamp(min=1.0)
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

    def __init__(
        self,
        box_weight: float = 5.0,
        giou_weight: float = 2.0,
        aux: bool = True,
        proposal_weight: float = 0.0,
        student_query_weight: float = 0.0,
        class_norm: str = "queries",
    ):
        super().__init__()
        if class_norm not in CLASS_NORMS:
            raise ValueError(f"CQD class_norm {class_norm!r}: expected one of {', '.join(CLASS_NORMS)}")
        self.box_weight, self.giou_weight, self.aux = box_weight, giou_weight, aux
        self.class_norm = class_norm
        self.proposal_weight = proposal_weight
        self.student_query_weight = student_query_weight

    def agreement(self, student: dict[str, Any], teacher: dict[str, Any]) -> Tensor:
        """Per-query loss averaged over the last decoder layer and, when counts agree, the others."""
        pairs = [(student, teacher)]
        s_aux, t_aux = student.get("aux_outputs", []), teacher.get("aux_outputs", [])
        if self.aux and len(s_aux) == len(t_aux):
            pairs += list(zip(s_aux, t_aux, strict=True))
        return torch.stack([_pair_loss(s, t, self.box_weight, self.giou_weight, self.class_norm)
                            for s, t in pairs]).mean()

    def forward(
        self,
        student: dict[str, Any],
        teacher: dict[str, Any],
        student_enc: dict[str, Tensor] | None = None,
        teacher_enc: dict[str, Tensor] | None = None,
        student_own: dict[str, Any] | None = None,
        teacher_on_student: dict[str, Any] | None = None,
    ) -> Tensor:
        """``student``/``teacher`` are decoder outputs (``pred_logits [B, Q, C]``, ``pred_boxes [B, Q, 4]``,
        ``aux_outputs``) for the same Q queries; ``*_enc`` the two views' ``enc_outputs`` (needed
        when ``proposal_weight > 0``); ``student_own`` the student's predictions for its own queries and
        ``teacher_on_student`` the teacher's for the same queries (needed when ``student_query_weight > 0``)."""
        loss = self.agreement(student, teacher)
        if self.student_query_weight > 0:
            if student_own is None or teacher_on_student is None:
                raise ValueError("CQD student-query term: the student's own and the teacher's outputs are needed")
            loss = loss + self.student_query_weight * self.agreement(student_own, teacher_on_student)
        if self.proposal_weight > 0:
            if student_enc is None or teacher_enc is None:
                raise ValueError("CQD proposal term: both views' enc_outputs are needed (a two-stage model)")
            loss = loss + self.proposal_weight * proposal_loss(student_enc, teacher_enc)
        return loss
