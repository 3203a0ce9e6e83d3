"""Foreground weight maps for Target-guided Feature Distillation, built from key-frame boxes.

Boxes are normalised ``cx, cy, w, h`` relative to the unpadded resized image (the target
convention); a feature map of padded size ``(h_l, w_l)`` covers that image on its top-left
``valid_ratio`` part, so a box maps to feature pixels by ``x * valid_w * w_l``. Pixel centres sit at
``i + 0.5``. Padding is always 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pixel_centres(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    ys = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    return ys[:, None], xs[None, :]


def foreground_mask(
    boxes: Tensor,
    size: tuple[int, int],
    valid: tuple[float, float] = (1.0, 1.0),
    mode: str = "gaussian",
    sigma_scale: float = 0.25,
) -> Tensor:
    """One ``[h, w]`` map in ``[0, 1]`` from ``boxes [N, 4]`` (normalised cxcywh).

    ``gaussian``: per box a 2-D Gaussian centred on the box centre with standard deviations
    ``sigma_scale * (box w, box h)`` in feature pixels (default: the box edge sits at 2 sigma), the
    map being the maximum over boxes. ``binary``: 1 on pixels whose centre lies inside a box.
    ``full``: 1 on every unpadded pixel, boxes or not (not target-guided: the teacher's features of
    the background and of look-alikes are distilled too, lesion-free frames included).
    ``valid = (valid_w, valid_h)``: the unpadded fraction of the map.
    """
    h, w = size
    ys, xs = _pixel_centres(h, w, boxes.device)
    vw, vh = valid
    valid_mask = (xs <= w * vw) & (ys <= h * vh)
    if mode == "full":
        return valid_mask.float()
    out = torch.zeros(h, w, device=boxes.device)
    if len(boxes) == 0:
        return out
    scale = boxes.new_tensor([w * vw, h * vh, w * vw, h * vh])
    for cx, cy, bw, bh in (boxes.float() * scale).tolist():
        if mode == "gaussian":
            sx, sy = max(sigma_scale * bw, 1e-3), max(sigma_scale * bh, 1e-3)
            m = torch.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))
        elif mode == "binary":
            inside_x = (xs >= cx - bw / 2) & (xs <= cx + bw / 2)
            inside_y = (ys >= cy - bh / 2) & (ys <= cy + bh / 2)
            m = (inside_x & inside_y).float()
        else:
            raise ValueError(f"unknown mask mode {mode!r}: expected 'gaussian', 'binary' or 'full'")
        out = torch.maximum(out, m)
    return out * valid_mask


def foreground_masks(
    targets: list[dict[str, Tensor]],
    shapes: list[tuple[int, int]],
    valid_ratios: Tensor,
    mode: str = "gaussian",
) -> list[Tensor]:
    """Per level ``[B, h_l, w_l]`` maps for a batch; ``valid_ratios [B, L, 2]`` (w, h) as the encoder's."""
    levels = []
    for lvl, (h, w) in enumerate(shapes):
        maps = [
            foreground_mask(t["boxes"], (h, w), tuple(valid_ratios[b, lvl].tolist()), mode)  # type: ignore[arg-type]
            for b, t in enumerate(targets)
        ]
        levels.append(torch.stack(maps))
    return levels
