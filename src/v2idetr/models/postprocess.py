"""Detector outputs -> scored boxes in pixels of the original frames.

The detector's boxes are normalised ``cx, cy, w, h`` relative to the *unpadded* resized image
(padding only adds pixels bottom/right, and resizing keeps the aspect ratio up to rounding), so
multiplying by the original frame's ``(w, h, w, h)`` maps them straight back to the original frame:
neither the resize factor nor the batch padding is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

__all__ = ["PostProcess"]


class PostProcess(nn.Module):
    """Top-``num_select`` (query, class) pairs per image, as DETR's sigmoid post-processing.

    A query may appear once per class; no score threshold or NMS is applied here (the evaluator
    applies the protocol's). ``forward_batched`` is free of Python loops over images and of
    data-dependent control flow, so it can be traced for ONNX export.
    """

    def __init__(self, num_select: int = 100):
        super().__init__()
        if num_select < 1:
            raise ValueError(f"PostProcess: num_select = {num_select}, expected >= 1 (eval.num_select)")
        self.num_select = num_select

    def forward_batched(
        self, pred_logits: Tensor, pred_boxes: Tensor, target_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Batched detections with ``K = min(num_select, Q * C)``.

        ``pred_logits [B, Q, C]`` sigmoid logits, ``pred_boxes [B, Q, 4]`` normalised cxcywh,
        ``target_sizes [B, 2]`` ``(h, w)`` of the original frames. Returns ``scores [B, K]`` float32
        (descending), ``labels [B, K]`` int64 and ``boxes [B, K, 4]`` float32 ``x1, y1, x2, y2``
        pixels of the original frame, clamped to ``[0, w] x [0, h]``.
        """
        num_classes = pred_logits.shape[-1]
        prob = pred_logits.float().sigmoid().flatten(1)
        k = min(self.num_select, prob.shape[1])
        scores, flat_idx = prob.topk(k, dim=1)
        query_idx = torch.div(flat_idx, num_classes, rounding_mode="floor")
        labels = flat_idx % num_classes
        boxes = box_convert(pred_boxes.float(), "cxcywh", "xyxy")
        boxes = boxes.gather(1, query_idx.unsqueeze(-1).expand(-1, -1, 4))
        h, w = target_sizes.float().unbind(1)
        scale = torch.stack([w, h, w, h], dim=1).unsqueeze(1)
        boxes = torch.minimum((boxes * scale).clamp(min=0.0), scale)
        return scores, labels.to(torch.int64), boxes

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """``outputs`` with ``pred_logits [B, Q, C]`` and ``pred_boxes [B, Q, 4]``; ``target_sizes [B, 2]``
        ``(h, w)`` of the original frames. Returns list[B] of ``scores [K]``, ``labels [K]`` int64 and
        ``boxes [K, 4]`` x1y1x2y2 pixels of the original frame (see ``forward_batched``)."""
        pred_logits = outputs["pred_logits"]
        if target_sizes.dim() != 2 or target_sizes.shape != (pred_logits.shape[0], 2):
            raise ValueError(
                f"PostProcess: target_sizes must be [B, 2] (h, w) with B = {pred_logits.shape[0]}, "
                f"got shape {list(target_sizes.shape)}"
            )
        scores, labels, boxes = self.forward_batched(
            pred_logits, outputs["pred_boxes"], target_sizes.to(pred_logits.device)
        )
        return [
            {"scores": s, "labels": lab, "boxes": b}
            for s, lab, b in zip(scores.unbind(0), labels.unbind(0), boxes.unbind(0), strict=True)
        ]
