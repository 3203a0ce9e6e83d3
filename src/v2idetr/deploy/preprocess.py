"""Frames in any common form -> the padded ``[0, 1]`` batch an ``InferenceModel`` takes.

Resizing is the evaluation transform's (PIL bilinear, short side ``test_size``, long side capped
at ``max_size``), so ``predict``, the Python API, the ONNX runner and ``eval`` see the same pixels.
Normalisation and the padding mask are *not* done here: they are part of ``InferenceModel``, so the
exported ONNX graph includes them and its users only resize and pad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from v2idetr.data.transforms import RandomResize


@dataclass
class PreparedBatch:
    """``images`` float32 ``[B, 3, H, W]`` RGB in [0, 1], zero-padded bottom/right (``[B, T, 3, H, W]``
    for a teacher's clips, key frame first: ``ClipDetector.prepare_clips``);
    ``image_sizes`` int64 ``[B, 2]`` ``(h, w)`` of the resized frames inside the padding;
    ``orig_sizes`` int64 ``[B, 2]`` ``(h, w)`` of the frames as given (boxes come back in these pixels);
    for clips both are the key frame's (every frame of a clip has its size)."""

    images: torch.Tensor
    image_sizes: torch.Tensor
    orig_sizes: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def as_rgb_array(frame: Any, what: str = "frame") -> np.ndarray:
    """One frame as ``[H, W, 3]`` uint8 RGB.

    Accepts numpy ``[H, W, 3]`` / ``[H, W]`` uint8 (RGB, as ``av`` and PIL give them; OpenCV's BGR
    must be flipped by the caller), PIL images of any mode, and tensors ``[3, H, W]`` (torchvision
    layout) that are uint8 or float in [0, 1].
    """
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"), dtype=np.uint8)
    if isinstance(frame, torch.Tensor):
        if frame.dim() != 3 or frame.shape[0] not in (1, 3):
            raise ValueError(f"{what}: a tensor frame must be [3, H, W] (or [1, H, W]), got shape {list(frame.shape)}")
        t = frame.detach().cpu()
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round()
        elif t.dtype != torch.uint8:
            raise ValueError(f"{what}: a tensor frame must be uint8 or float in [0, 1], got {t.dtype}")
        array = t.to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).numpy()
        return np.ascontiguousarray(array)
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8:
            raise ValueError(f"{what}: a numpy frame must be uint8 (H x W x 3 RGB), got {frame.dtype}")
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise ValueError(f"{what}: a numpy frame must be H x W x 3 (RGB), got shape {list(frame.shape)}")
        return np.ascontiguousarray(frame[:, :, :3])
    raise TypeError(f"{what}: expected a numpy array, a PIL image or a tensor, got {type(frame).__name__}")


def split_frames(inputs: Any) -> tuple[list[np.ndarray], bool]:
    """``(frames, was_batch)``: a single frame, a list/tuple of frames, or a 4-D array/tensor batch
    (numpy ``[B, H, W, 3]``, tensor ``[B, 3, H, W]``)."""
    if isinstance(inputs, (list, tuple)):
        return [as_rgb_array(f, f"frame {i}") for i, f in enumerate(inputs)], True
    if isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == 4:
        return [as_rgb_array(f, f"frame {i}") for i, f in enumerate(inputs)], True
    return [as_rgb_array(inputs)], False


def resized_size(h: int, w: int, test_size: int, max_size: int | None) -> tuple[int, int]:
    """The evaluation transform's output ``(h, w)`` for a frame of ``(h, w)``."""
    return RandomResize([test_size], max_size).output_size(h, w, test_size)


def prepare_batch(
    frames: Sequence[np.ndarray],
    test_size: int,
    max_size: int | None,
    size_divisor: int = 32,
    pad_to: tuple[int, int] | None = None,
) -> PreparedBatch:
    """Resize each ``[H, W, 3]`` uint8 frame like evaluation and pad the batch bottom/right.

    The padded size is the largest frame rounded up to ``size_divisor``, or exactly ``pad_to``
    (the fixed input of an exported model; every resized frame must fit in it).
    """
    if not frames:
        raise ValueError("prepare_batch: no frames")
    sizes = [resized_size(f.shape[0], f.shape[1], test_size, max_size) for f in frames]
    if pad_to is not None:
        H, W = pad_to
        too_big = [s for s in sizes if s[0] > H or s[1] > W]
        if too_big:
            raise ValueError(f"resized frames {too_big} do not fit the fixed input size {H}x{W}")
    else:
        H, W = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if size_divisor > 1:
            H, W = math.ceil(H / size_divisor) * size_divisor, math.ceil(W / size_divisor) * size_divisor
    images = torch.zeros((len(frames), 3, H, W), dtype=torch.float32)
    for b, (frame, (h, w)) in enumerate(zip(frames, sizes, strict=True)):
        resized = frame
        if (h, w) != frame.shape[:2]:
            resized = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR))
        images[b, :, :h, :w] = torch.tensor(resized).permute(2, 0, 1).float().div_(255.0)
    return PreparedBatch(
        images=images,
        image_sizes=torch.tensor(sizes, dtype=torch.int64),
        orig_sizes=torch.tensor([f.shape[:2] for f in frames], dtype=torch.int64),
    )
