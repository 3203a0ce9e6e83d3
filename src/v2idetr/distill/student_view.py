"""A degraded view of the key frame for the student, the clean clip for the teacher.

The teacher's lead over an image detector lies on degraded frames (docs/RESULTS.md), and TFD and
CQD alone teach little of it: on the frames where they act, the student and the teacher mostly see
the same clean pixels. With ``distill.student_degrade = p``, each sample's key frame is, with
probability ``p``, degraded for the student only (blur, noise, low contrast or over-exposure, of a
random strength), while the frozen teacher keeps the clean clip. TFD then pulls the student's
features of the degraded frame towards the teacher's of the clean one, and CQD its answers towards
the teacher's confident ones: what the student learns is to see through the degradation. The draws
use torch's global generator, whose state the checkpoints keep, so a resumed run degrades the same
samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("blur", "noise", "low_contrast", "overexposed")


def _gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """``[3, H, W]`` blurred with a separable Gaussian of ``sigma`` pixels (reflect padding)."""
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[0]
    out = F.pad(img[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def degrade(img: Tensor, kind: str) -> Tensor:
    """One degradation of a ``[3, h, w]`` frame in ``[0, 1]``, of a random strength."""
    if kind == "blur":
        return _gaussian_blur(img, _uniform(1.0, 3.0))
    if kind == "noise":
        return (img + torch.randn_like(img) * _uniform(0.05, 0.2)).clamp(0, 1)
    if kind == "low_contrast":
        mean = img.mean()
        return (mean + (img - mean) * _uniform(0.15, 0.5)).clamp(0, 1)
    if kind == "overexposed":
        return (img * _uniform(1.3, 2.5)).clamp(0, 1)
    raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(KINDS)}")


def degrade_key_frames(images: Tensor, masks: Tensor, p: float) -> Tensor:
    """``images [B, 3, H, W]`` RGB in ``[0, 1]`` and zero-padded (``masks [B, H, W]``, True on
    padding) -> a copy whose frames are each degraded with probability ``p`` on their valid region."""
    if p <= 0.0:
        return images
    out = images.clone()
    for b in range(images.shape[0]):
        if float(torch.rand(())) >= p:
            continue
        valid = ~masks[b]
        h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
        kind = KINDS[int(torch.randint(len(KINDS), ()))]
        out[b, :, :h, :w] = degrade(images[b, :, :h, :w], kind)
    return out
