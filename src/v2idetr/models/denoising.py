"""Contrastive denoising queries (DN-DETR / DINO) that speed up DETR training.

From the ground truth, each *group* holds one positive (slightly noised box, label kept with
probability ``1 - label_noise / 2``) and one negative (box noised further: it should predict
no-object) query per target slot, slots padded to the batch's largest target count. The decoder
runs these queries before the matching queries in one pass; the attention mask stops matching
queries from seeing any denoising query (they would read the answers) and stops groups from
seeing each other. Positives are trained towards their own target, everything else towards
no-object, with no Hungarian matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert


@dataclass
class DenoisingQueries:
    """Denoising inputs for one batch (``N = num_groups * 2 * max_targets`` queries).

    content     [B, N, D]    label embeddings of the (label-noised) targets
    ref_boxes   [B, N, 4]    noised boxes, normalised cxcywh in [0, 1]
    attn_mask   [N + Q, N + Q] bool, True where attention is blocked (denoising queries first)
    meta        {"pairs": list[B] of (query_idx, target_idx) LongTensors for the positives,
                 "num_dn": N, "num_groups": G, "max_targets": M}
    """

    content: Tensor
    ref_boxes: Tensor
    attn_mask: Tensor
    meta: dict[str, Any]


class DenoisingGenerator(nn.Module):
    """Builds ``DenoisingQueries`` from targets (see module docstring); owns the label embedding."""

    def __init__(self, num_classes: int, d_model: int, dn_number: int, label_noise: float, box_noise: float):
        super().__init__()
        self.num_classes = num_classes
        self.dn_number = dn_number
        self.label_noise = label_noise
        self.box_noise = box_noise
        self.label_embed = nn.Embedding(num_classes, d_model)

    def forward(self, targets: list[dict[str, Tensor]], num_queries: int) -> DenoisingQueries | None:
        """``targets``: per image ``boxes [n, 4]`` normalised cxcywh and ``labels [n]``; ``None`` when
        no image has a target (nothing to denoise)."""
        counts = [int(t["labels"].numel()) for t in targets]
        max_n = max(counts, default=0)
        if self.dn_number <= 0 or max_n == 0:
            return None
        device = self.label_embed.weight.device
        b = len(targets)
        groups = max(1, self.dn_number // (2 * max_n))
        group_size = 2 * max_n
        num_dn = groups * group_size

        # Slots [B, M]: real targets first, padding slots get a dummy box and are no-object.
        boxes = torch.tensor([0.5, 0.5, 0.2, 0.2], device=device).repeat(b, max_n, 1)
        labels = torch.randint(0, self.num_classes, (b, max_n), device=device)
        for i, t in enumerate(targets):
            n = counts[i]
            if n:
                boxes[i, :n] = t["boxes"].to(device=device, dtype=boxes.dtype)
                labels[i, :n] = t["labels"].to(device)
        # Layout per group: M positives then M negatives -> [B, G, 2, M].
        boxes = boxes[:, None, None].expand(b, groups, 2, max_n, 4)
        labels = labels[:, None, None].expand(b, groups, 2, max_n).clone()

        flip = torch.rand(labels.shape, device=device) < self.label_noise * 0.5
        labels = torch.where(flip, torch.randint_like(labels, 0, self.num_classes), labels)

        noised = self._noise_boxes(boxes)
        content = self.label_embed(labels.reshape(b, num_dn))
        ref_boxes = noised.reshape(b, num_dn, 4)

        total = num_dn + num_queries
        attn_mask = torch.zeros(total, total, dtype=torch.bool, device=device)
        attn_mask[num_dn:, :num_dn] = True
        group_id = torch.arange(num_dn, device=device) // group_size
        attn_mask[:num_dn, :num_dn] = group_id[:, None] != group_id[None, :]

        pairs = []
        for n in counts:
            slot = torch.arange(n, device=device)
            query_idx = (torch.arange(groups, device=device)[:, None] * group_size + slot[None]).flatten()
            pairs.append((query_idx, slot.repeat(groups)))
        meta = {"pairs": pairs, "num_dn": num_dn, "num_groups": groups, "max_targets": max_n}
        return DenoisingQueries(content=content, ref_boxes=ref_boxes, attn_mask=attn_mask, meta=meta)

    def _noise_boxes(self, boxes: Tensor) -> Tensor:
        """``[B, G, 2, M, 4]`` cxcywh -> noised copies; each edge moves by ``box_noise * (w|h) / 2``
        times a random fraction in ``[0, 1)`` (positives, index 0) or ``[1, 2)`` (negatives)."""
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        half = torch.cat([boxes[..., 2:], boxes[..., 2:]], -1) / 2
        part = torch.rand_like(boxes)
        part[:, :, 1] += 1.0
        sign = torch.randint_like(boxes, 0, 2) * 2 - 1
        xyxy = (xyxy + sign * part * half * self.box_noise).clamp(0.0, 1.0)
        out = box_convert(xyxy, "xyxy", "cxcywh")
        # Keep boxes non-degenerate so inverse-sigmoid references stay finite and meaningful.
        return torch.cat([out[..., :2], out[..., 2:].clamp(min=1e-3)], -1)
