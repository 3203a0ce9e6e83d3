"""Sine position encodings: of feature-map pixels (from the padding mask) and of query boxes.

Both follow DETR / Deformable DETR: coordinates are normalised to ``[0, 2*pi]`` over the *valid*
(unpadded) part of the image, so a padded image encodes its pixels as the unpadded one would.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _sine_features(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """``coords [..., K]`` (already scaled to ``[0, 2*pi]``) -> ``[..., K * num_feats]``.

    For each coordinate, ``num_feats / 2`` frequencies, sin and cos interleaved as in DETR.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords[..., None] / dim_t  # [..., K, F]
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
    return pos.flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-D sine encoding of every pixel of a feature map, computed from its padding mask.

    ``forward(mask [B, H, W] bool, True on padding) -> [B, 2 * num_pos_feats, H, W]`` with the
    ``y`` features first, then ``x`` (DETR's layout). Pixel centres are used (offset 0.5), and
    the coordinates are divided by the valid extent of each image, so they lie in ``(0, 2*pi]``.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        eps = 1e-6
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        coords = torch.stack((y_embed, x_embed), dim=-1)  # [B, H, W, 2]
        pos = _sine_features(coords, self.num_pos_feats, self.temperature)  # [B, H, W, 2F]
        return pos.permute(0, 3, 1, 2).contiguous()


def box_sine_embedding(boxes: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine encoding of query boxes (DAB/DINO decoders): ``[..., 4]`` -> ``[..., 4 * num_feats]``.

    ``boxes`` are normalised ``cx, cy, w, h`` in ``[0, 1]``; the output order is
    ``y, x, w, h`` features (DETR puts ``y`` first), each of ``num_feats`` dims.
    """
    if num_feats % 2:
        raise ValueError(f"num_feats must be even, got {num_feats}")
    coords = boxes[..., [1, 0, 2, 3]] * (2 * math.pi)
    return _sine_features(coords, num_feats, temperature)
