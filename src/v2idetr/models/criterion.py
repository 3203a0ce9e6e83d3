"""Set-prediction loss of the deformable DETR (focal classification + L1 + GIoU on matched boxes).

Every prediction set the detector returns is scored the same way: the last decoder layer, each
intermediate layer (``aux_outputs``, suffix ``_{i}``), the two-stage encoder proposals
(``enc_outputs``, suffix ``_enc``) and the denoising queries (``dn_outputs``, suffixes ``_dn`` and
``_dn_{i}``). Matching sets use the Hungarian matcher (re-run per layer, as DETR does); denoising
queries use the fixed ``dn_meta["pairs"]`` assignment built with them.

Normalisation: every component is a sum over the batch divided by ``num_boxes``, the number of
target boxes averaged over processes and clamped to >= 1, so duplicating a batch leaves each loss
unchanged. The classification loss sums the focal loss over all queries and classes, which is
Deformable DETR's ``focal.mean(1).sum() * Q / num_boxes``. Denoising losses divide by the number
of positive denoising pairs instead (``num_boxes`` times the number of denoising groups), as DINO
does, so adding groups does not scale the denoising terms up.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from v2idetr.config import LossConfig
from v2idetr.errors import ConfigError
from v2idetr.models.matcher import HungarianMatcher

__all__ = ["LOSS_NAMES", "SetCriterion", "build_criterion", "select_images"]

#: Base names of the loss components; ``weight_dict`` keys and the prefixes of every returned key.
LOSS_NAMES = ("loss_class", "loss_bbox", "loss_giou")

Indices = list[tuple[Tensor, Tensor]]


class SetCriterion(nn.Module):
    """Detection loss for the outputs contract of docs/ARCHITECTURE.md.

    ``forward(outputs, targets)`` returns unweighted components (``loss_class``, ``loss_bbox``,
    ``loss_giou`` and their suffixed copies) plus ``loss``, the sum of every component weighted by
    ``weight_dict`` of its base name. Frames without targets train all their queries towards
    no-object (class loss only). Targets may carry ``scores [N]`` in [0, 1]: soft class targets
    instead of 1 for their matched queries (a teacher's detections as pseudo-labels). With ``aux=False`` only the last decoder layer (of the matching
    and of the denoising queries) and the encoder proposals are scored.

    The encoder proposals are scored with the real class labels (DINO style), matching the
    two-stage selection that ranks proposals by their best class logit.

    ``iou_aware=True`` replaces the focal loss by the varifocal loss: a matched query's target is
    the IoU of its box with the target box (detached) instead of 1, so scores learn to rank boxes
    by localisation quality.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        aux: bool = True,
        iou_aware: bool = False,
    ):
        super().__init__()
        unknown = sorted(set(weight_dict) - set(LOSS_NAMES))
        missing = sorted(set(LOSS_NAMES) - set(weight_dict))
        if unknown or missing:
            raise ConfigError(
                f"loss weights: expected exactly the keys {', '.join(LOSS_NAMES)}; "
                f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.aux = aux
        self.iou_aware = iou_aware

    def match(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> Indices:
        """Hungarian assignment of the last decoder layer: list[B] of (query_idx, target_idx)."""
        return self.matcher(outputs, targets)

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``outputs`` as the detector returns them; ``targets`` list[B] of ``labels [N_i]`` int64 and
        ``boxes [N_i, 4]`` normalised cxcywh. Returns scalar tensors (see class docstring)."""
        device = outputs["pred_logits"].device
        has_dn = "dn_outputs" in outputs
        dn_pairs: Indices = []
        if has_dn:
            if "dn_meta" not in outputs:
                raise KeyError(
                    "criterion: 'dn_outputs' given without 'dn_meta' (its fixed query/target pairs)"
                )
            dn_pairs = outputs["dn_meta"]["pairs"]
        num_boxes, num_dn = _average_counts(
            [sum(int(t["labels"].numel()) for t in targets), sum(int(q.numel()) for q, _ in dn_pairs)],
            device,
        )

        losses: dict[str, Tensor] = {}
        losses.update(self.set_loss(outputs, targets, self.match(outputs, targets), num_boxes))
        if self.aux:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                losses.update(self.set_loss(aux, targets, self.match(aux, targets), num_boxes, f"_{i}"))
        if outputs.get("enc_outputs") is not None:
            enc = outputs["enc_outputs"]
            losses.update(self.set_loss(enc, targets, self.match(enc, targets), num_boxes, "_enc"))
        if has_dn:
            dn = outputs["dn_outputs"]
            losses.update(self.set_loss(dn, targets, dn_pairs, num_dn, "_dn"))
            if self.aux:
                for i, aux in enumerate(dn.get("aux_outputs", [])):
                    losses.update(self.set_loss(aux, targets, dn_pairs, num_dn, f"_dn_{i}"))
        losses["loss"] = self.weighted_total(losses)
        return losses

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        """``sum_k weight_dict[base(k)] * losses[k]`` over every component key."""
        total = None
        for key, value in losses.items():
            base = "_".join(key.split("_")[:2])
            if base not in self.weight_dict:
                continue
            term = self.weight_dict[base] * value
            total = term if total is None else total + term
        if total is None:
            raise ValueError("criterion: no loss components to sum")
        return total

    def set_loss(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, Tensor]],
        indices: Indices,
        num_boxes: float,
        suffix: str = "",
    ) -> dict[str, Tensor]:
        """The three components of one prediction set under a given assignment.

        ``outputs``: ``pred_logits [B, Q, C]``, ``pred_boxes [B, Q, 4]`` normalised cxcywh.
        ``indices``: list[B] of (query_idx, target_idx); unassigned queries are no-object.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        device = logits.device
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        tgt_labels = torch.cat(
            [t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices, strict=True)]
        )
        tgt_boxes = torch.cat(
            [t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices, strict=True)]
        )
        tgt_labels = tgt_labels.to(device=device, dtype=torch.int64)
        tgt_boxes = tgt_boxes.to(device=device, dtype=torch.float32)

        src_boxes = boxes[batch_idx, query_idx].float()
        onehot = torch.zeros(logits.shape, dtype=torch.float32, device=device)
        # soft targets (a teacher's scores, ``targets[i]["scores"]``) replace the 1 of a labelled box
        soft = [t.get("scores") for t in targets]
        onehot[batch_idx, query_idx, tgt_labels] = (
            1.0 if all(x is None for x in soft) else torch.cat(
                [x[j.to(x.device)] for x, (_, j) in zip(soft, indices, strict=True)]).to(device=device, dtype=torch.float32)
        )
        logits = logits.float()
        if self.iou_aware:
            with torch.no_grad():
                iou = box_iou(
                    box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
                ).diagonal()
            quality = torch.zeros_like(onehot)
            quality[batch_idx, query_idx, tgt_labels] = iou.nan_to_num(0.0).clamp(0.0, 1.0)
            loss_class = _varifocal_loss(logits, onehot, quality, self.focal_alpha, self.focal_gamma)
        else:
            loss_class = sigmoid_focal_loss(
                logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="sum")
        loss_giou = generalized_box_iou_loss(
            box_convert(src_boxes, "cxcywh", "xyxy"),
            box_convert(tgt_boxes, "cxcywh", "xyxy"),
            reduction="sum",
        )
        return {
            f"loss_class{suffix}": loss_class / num_boxes,
            f"loss_bbox{suffix}": loss_bbox / num_boxes,
            f"loss_giou{suffix}": loss_giou / num_boxes,
        }


def _varifocal_loss(logits: Tensor, onehot: Tensor, quality: Tensor, alpha: float, gamma: float) -> Tensor:
    """Varifocal loss (VarifocalNet / RT-DETR), summed: BCE towards ``quality`` on positives, weighted
    ``alpha * p^gamma`` on negatives. All tensors ``[B, Q, C]``; ``quality`` is 0 off the positives."""
    prob = logits.sigmoid().detach()
    weight = alpha * prob.pow(gamma) * (1 - onehot) + quality
    return F.binary_cross_entropy_with_logits(logits, quality, weight=weight, reduction="sum")


def select_images(outputs: dict[str, Any], keep: list[int], denoising: bool = True) -> dict[str, Any]:
    """What the criterion reads of the detector's ``outputs``, for the images ``keep`` of the batch
    only (a detection loss on part of a batch: the labelled key frames of a distillation batch);
    without the denoising queries' outputs unless ``denoising`` (they were built from other targets)."""
    index = torch.as_tensor(keep, dtype=torch.long, device=outputs["pred_logits"].device)

    def take(d: dict[str, Any]) -> dict[str, Any]:
        res = {"pred_logits": d["pred_logits"][index], "pred_boxes": d["pred_boxes"][index]}
        if "aux_outputs" in d:
            res["aux_outputs"] = [take(a) for a in d["aux_outputs"]]
        return res

    selected = take(outputs)
    if outputs.get("enc_outputs") is not None:
        selected["enc_outputs"] = take(outputs["enc_outputs"])
    if "dn_outputs" in outputs and denoising:
        selected["dn_outputs"] = take(outputs["dn_outputs"])
        pairs = outputs["dn_meta"]["pairs"]
        selected["dn_meta"] = {**outputs["dn_meta"], "pairs": [pairs[i] for i in keep]}
    return selected


def _average_counts(counts: list[int], device: torch.device) -> tuple[float, ...]:
    """Per-process counts summed over processes, divided by the world size, each clamped to >= 1,
    so every process normalises by the same number."""
    values = torch.tensor(counts, dtype=torch.float32, device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
        world = dist.get_world_size()
    return tuple(float(v) for v in (values / world).clamp(min=1.0).tolist())


def build_criterion(loss_cfg: LossConfig, num_classes: int) -> SetCriterion:
    """The criterion and its matcher from ``LossConfig``; bad values raise ``ConfigError`` naming the key."""
    if num_classes < 1:
        raise ConfigError(f"model.num_classes = {num_classes}: expected >= 1")
    for key in (
        "cost_class",
        "cost_bbox",
        "cost_giou",
        "loss_class",
        "loss_bbox",
        "loss_giou",
        "focal_gamma",
    ):
        value = getattr(loss_cfg, key)
        if value < 0:
            raise ConfigError(f"config key 'loss.{key}' = {value}: expected >= 0")
    if not 0.0 <= loss_cfg.focal_alpha <= 1.0:
        raise ConfigError(
            f"config key 'loss.focal_alpha' = {loss_cfg.focal_alpha}: expected a value in [0, 1]"
        )
    matcher = HungarianMatcher(
        cost_class=loss_cfg.cost_class,
        cost_bbox=loss_cfg.cost_bbox,
        cost_giou=loss_cfg.cost_giou,
        focal_alpha=loss_cfg.focal_alpha,
        focal_gamma=loss_cfg.focal_gamma,
    )
    weights = {
        "loss_class": loss_cfg.loss_class,
        "loss_bbox": loss_cfg.loss_bbox,
        "loss_giou": loss_cfg.loss_giou,
    }
    return SetCriterion(
        num_classes,
        matcher,
        weights,
        focal_alpha=loss_cfg.focal_alpha,
        focal_gamma=loss_cfg.focal_gamma,
        aux=loss_cfg.aux,
    )
