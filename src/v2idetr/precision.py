"""Names of the floating-point precisions the CLI and configs accept, and their torch dtypes.

One table for inference (``predict --precision``, ``Detector``, ``bench speed --precision``) and
training (``train.amp``), so a name means the same dtype everywhere. ``None`` is full fp32.
"""

from __future__ import annotations

import torch

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def half_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of ``name`` (``fp16`` / ``bf16``), or None for full precision
    (``fp32``, and ``train.amp``'s ``none``)."""
    return PRECISIONS.get(name)
