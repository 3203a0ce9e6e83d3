"""Batching clips of different sizes: zero padding at the bottom/right and a mask of the padding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def _map_target(target: dict[str, Any], fn: Any) -> dict[str, Any]:
    return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


@dataclass
class Batch:
    """A batch of clips (see docs/ARCHITECTURE.md).

    ``images``        float32 ``[B, T, 3, H, W]`` RGB in [0, 1], zero-padded bottom/right;
                      index 0 along T is the key frame, then support frames in temporal order
    ``masks``         bool ``[B, H, W]`` True on padding (the same for every frame of a clip)
    ``targets``       list of B key-frame target dicts (boxes normalised cxcywh relative to the
                      unpadded ``size``, labels, image_id, orig_size, size)
    ``frame_targets`` list of B lists of T target dicts, or None when not requested
    ``frame_offsets`` int64 ``[B, T]``, ``frame_id(frame) - frame_id(key)``
    ``skipped``       image ids of key frames that could not be read and were skipped to fill this
                      batch (``data.skip_invalid``; empty otherwise)
    """

    images: torch.Tensor
    masks: torch.Tensor
    targets: list[dict[str, Any]]
    frame_targets: list[list[dict[str, Any]]] | None
    frame_offsets: torch.Tensor
    skipped: tuple[int, ...] = ()

    def _apply(self, fn: Any) -> Batch:
        return Batch(
            images=fn(self.images),
            masks=fn(self.masks),
            targets=[_map_target(t, fn) for t in self.targets],
            frame_targets=None
            if self.frame_targets is None
            else [[_map_target(t, fn) for t in clip] for clip in self.frame_targets],
            frame_offsets=fn(self.frame_offsets),
            skipped=self.skipped,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy on ``device``, target tensors included."""
        return self._apply(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copy; ``DataLoader(pin_memory=True)`` calls this on custom batch types."""
        return self._apply(lambda x: x.pin_memory())

    def __len__(self) -> int:
        return int(self.images.shape[0])


def collate_clips(samples: list[dict[str, Any]], size_divisor: int = 32) -> Batch:
    """Stack ``ClipDataset`` items into a ``Batch``, padding to the largest ``h, w`` of the batch.

    The padded size is rounded up to a multiple of ``size_divisor`` (1 or 0: no rounding). Every
    sample must have the same number of frames T; a mismatch is a ``ValueError``.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    lengths = [int(s["images"].shape[0]) for s in samples]
    if len(set(lengths)) != 1:
        raise ValueError(f"all clips of a batch must have the same number of frames T, got {lengths}")
    with_frame_targets = ["frame_targets" in s for s in samples]
    if any(with_frame_targets) and not all(with_frame_targets):
        raise ValueError("either every sample or none must carry 'frame_targets'")
    T = lengths[0]
    channels = int(samples[0]["images"].shape[1])
    H = max(int(s["images"].shape[-2]) for s in samples)
    W = max(int(s["images"].shape[-1]) for s in samples)
    if size_divisor > 1:
        H, W = math.ceil(H / size_divisor) * size_divisor, math.ceil(W / size_divisor) * size_divisor
    images = torch.zeros((len(samples), T, channels, H, W), dtype=torch.float32)
    masks = torch.ones((len(samples), H, W), dtype=torch.bool)
    for b, s in enumerate(samples):
        h, w = s["images"].shape[-2:]
        images[b, :, :, :h, :w] = s["images"]
        masks[b, :h, :w] = False
    return Batch(
        images=images,
        masks=masks,
        targets=[s["target"] for s in samples],
        frame_targets=[s["frame_targets"] for s in samples] if with_frame_targets[0] else None,
        frame_offsets=torch.stack([torch.as_tensor(s["frame_offsets"], dtype=torch.int64) for s in samples]),
        skipped=tuple(i for s in samples for i in s.get("skipped", ())),
    )
