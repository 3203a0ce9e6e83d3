"""Hungarian matching between a detector's queries and the ground truth (DETR / Deformable DETR).

Set prediction needs a one-to-one assignment of queries to targets before a loss can be computed;
the assignment minimises a weighted sum of a classification cost, an L1 box cost and a GIoU cost.
Unmatched queries are trained towards no-object by the criterion.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from v2idetr.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["HungarianMatcher", "NONFINITE_COST"]

#: Cost that replaces NaN/inf entries so the assignment always exists; such pairs are picked last.
NONFINITE_COST = 1e8

_EPS = 1e-8


class HungarianMatcher(nn.Module):
    """Optimal one-to-one query/target assignment per image.

    Cost = ``cost_class * focal class cost + cost_bbox * L1(cxcywh) + cost_giou * (-GIoU)``.
    The class cost is Deformable DETR's focal-loss-style cost on sigmoid probabilities ``p`` of the
    target class: ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))`` (the focal loss of
    calling the query positive minus that of calling it negative).

    Non-finite costs (diverged predictions, degenerate zero-area boxes) are replaced by
    ``NONFINITE_COST`` with a warning rather than raised: the assignment still exists, and a
    diverged step then shows up as a non-finite loss, which the trainer already counts and skips.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if min(cost_class, cost_bbox, cost_giou) < 0 or max(cost_class, cost_bbox, cost_giou) <= 0:
            raise ConfigError(
                f"matching costs (loss.cost_class={cost_class}, loss.cost_bbox={cost_bbox}, "
                f"loss.cost_giou={cost_giou}): expected >= 0 with at least one > 0"
            )
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_matrix(
        self, pred_logits: Tensor, pred_boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor
    ) -> Tensor:
        """Total cost ``[P, N]`` between ``P`` predictions and ``N`` targets.

        ``pred_logits [P, C]`` sigmoid logits, ``pred_boxes [P, 4]`` and ``tgt_boxes [N, 4]``
        normalised cxcywh, ``tgt_labels [N]`` int64 in ``[0, C)``. Computed in float32.
        """
        prob = pred_logits.float().sigmoid()
        out_boxes = pred_boxes.float()
        tgt_boxes = tgt_boxes.float()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + _EPS).log()
        pos = alpha * (1 - prob).pow(gamma) * -(prob + _EPS).log()
        cost_class = pos[:, tgt_labels] - neg[:, tgt_labels]
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(
            box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        return self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match each image's queries to its targets.

        ``outputs``: ``pred_logits [B, Q, C]``, ``pred_boxes [B, Q, 4]`` normalised cxcywh.
        ``targets``: list[B] of ``labels [N_i]`` int64 and ``boxes [N_i, 4]`` normalised cxcywh.
        Returns list[B] of ``(query_idx, target_idx)`` int64 CPU tensors of length ``min(Q, N_i)``,
        sorted by query index; empty for images without targets.

        The cost of the whole batch is one ``[B*Q, sum N_i]`` matrix (computed on the outputs'
        device, one transfer to the CPU) split per image for ``scipy``'s assignment.
        """
        pred_logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]
        b, q, num_classes = pred_logits.shape
        if len(targets) != b:
            raise ValueError(f"matcher: {len(targets)} target dicts for a batch of {b} predictions")
        sizes = [int(t["boxes"].shape[0]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        device = pred_logits.device
        tgt_labels = torch.cat([t["labels"] for t in targets]).to(device=device, dtype=torch.int64)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(device)
        if int(tgt_labels.min()) < 0 or int(tgt_labels.max()) >= num_classes:
            _raise_bad_labels(targets, num_classes)
        cost = self.cost_matrix(pred_logits.flatten(0, 1), pred_boxes.flatten(0, 1), tgt_labels, tgt_boxes)
        cost = cost.view(b, q, -1).cpu()
        finite = torch.isfinite(cost)
        if not bool(finite.all()):
            logger.warning(
                "matcher: %d non-finite matching cost(s) replaced by %g (diverged predictions or "
                "zero-area boxes)",
                int((~finite).sum()),
                NONFINITE_COST,
            )
            cost = torch.where(finite, cost, torch.full_like(cost, NONFINITE_COST))
        indices = []
        for i, block in enumerate(cost.split(sizes, -1)):
            if sizes[i] == 0:
                indices.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(block[i].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices


def _raise_bad_labels(targets: list[dict[str, Tensor]], num_classes: int) -> None:
    """Labels outside ``[0, C)`` mean the class count disagrees with the data: say where."""
    for i, t in enumerate(targets):
        labels = t["labels"]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            image_id = t.get("image_id")
            which = f"image_id {int(image_id)}" if image_id is not None else f"batch item {i}"
            raise ConfigError(
                f"targets of {which}, field 'labels': expected class indices in [0, {num_classes}) "
                f"(model.num_classes = {num_classes}), got {labels.tolist()}; check model.num_classes "
                "against the dataset's categories"
            )
    raise ConfigError(f"target labels: expected class indices in [0, {num_classes})")
