"""Clips: a key frame plus ``T - 1`` support frames of the same video, as the dataset items.

Sampling modes (DESIGN section 4):

- ``adjacent``: symmetric offsets ``-stride, +stride, -2*stride, +2*stride, ...`` (for an even
  ``T`` the past gets the extra frame). Offsets are *clamped* at the video ends, not shifted: near
  an end the nearest valid frame is repeated, so a clip's frames never leave the video and the
  frames that do exist keep their distance to the key frame.
- ``random``: ``T - 1`` distinct frames drawn uniformly within ``+-window`` of the key frame,
  never the key frame itself unless there are too few other frames in reach (then all of them
  are taken and the rest drawn again, with replacement, from them and the key frame).
- ``global``: as ``random`` but anywhere in the video (CVA-Net's random frames).
- ``past``: causal, ``key - stride, key - 2*stride, ...`` clamped at frame 0 (streaming).

Positions are indices into ``VideoRecord.frames``; the result starts with the key frame and
continues with the support frames in temporal order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from v2idetr.config import DataConfig
from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.data.io import read_frame
from v2idetr.data.transforms import ClipTransform, Compose, ConvertBoxesToCxcywh, ToTensor
from v2idetr.errors import ConfigError, DatasetError, Problem

log = logging.getLogger(__name__)

CLIP_MODES = ("adjacent", "random", "global", "past")


@dataclass(frozen=True)
class ClipSampling:
    """How a model's clips are drawn: ``num_frames`` T, ``mode``, ``window`` (random), ``stride`` (adjacent, past)."""

    num_frames: int
    mode: str
    window: int
    stride: int

    @classmethod
    def of(cls, data: DataConfig, mode: str | None = None) -> ClipSampling:
        """A config's clip sampling (``mode`` replaces its ``data.clip_mode``)."""
        return cls(data.num_frames, mode or data.clip_mode, data.window, data.stride)


def support_frame_indices(
    num_frames_in_video: int, key: int, T: int, mode: str, window: int, stride: int, rng: np.random.Generator
) -> list[int]:
    """Positions of a clip's frames in its video: ``[key, support frames in temporal order]``.

    ``adjacent`` and ``past`` are deterministic; ``random`` and ``global`` draw from ``rng``.
    """
    n = num_frames_in_video
    if n < 1:
        raise ValueError(f"a video needs at least one frame, got {n}")
    if not 0 <= key < n:
        raise ValueError(f"key position {key} outside a video of {n} frames")
    if T < 1:
        raise ValueError(f"T (frames per clip) must be >= 1, got {T}")
    if mode not in CLIP_MODES:
        raise ValueError(f"clip mode {mode!r}: expected one of {', '.join(CLIP_MODES)}")
    if stride < 1 and mode in ("adjacent", "past"):
        raise ValueError(f"stride must be >= 1, got {stride}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if T == 1:
        return [key]
    k = T - 1
    if mode == "adjacent":
        steps = [-(i // 2 + 1) if i % 2 == 0 else i // 2 + 1 for i in range(k)]
        support = [min(max(key + s * stride, 0), n - 1) for s in steps]
    elif mode == "past":
        support = [max(key - i * stride, 0) for i in range(1, T)]
    else:
        lo, hi = (0, n - 1) if mode == "global" else (max(0, key - window), min(n - 1, key + window))
        others = np.array([p for p in range(lo, hi + 1) if p != key], dtype=np.int64)
        if len(others) >= k:
            support = rng.choice(others, size=k, replace=False).tolist()
        else:
            pool = np.append(others, key)
            support = others.tolist() + rng.choice(pool, size=k - len(others), replace=True).tolist()
    return [key, *sorted(int(p) for p in support)]


class ClipDataset(Dataset):
    """Every key frame of an index (optionally filtered) with its support frames.

    An item is a dict:
      ``images``        float32 ``[T, 3, h, w]`` after ``transforms``; index 0 is the key frame
      ``target``        key-frame target: ``boxes`` float32 ``[N, 4]`` normalised cxcywh relative
                        to the unpadded resized ``size``, ``labels`` int64 ``[N]``, ``image_id``
                        int64 ``[]``, ``orig_size`` int64 ``[2]`` (h, w), ``size`` int64 ``[2]`` (h, w),
                        ``labelled`` bool ``[]`` (False: nobody boxed the frame, so no boxes and
                        not a negative either)
      ``frame_targets`` (only with ``all_frame_targets``) list of ``T`` such dicts
      ``frame_offsets`` int64 ``[T]``, ``frame_id(frame) - frame_id(key)``

    The randomness of item ``i`` (support frames and augmentation) comes from
    ``np.random.default_rng((seed, epoch, i))``: it does not depend on worker count or order, and a
    run resumed at some epoch reproduces the clips of an uninterrupted one.
    """

    def __init__(
        self,
        index: DatasetIndex,
        num_frames: int = 1,
        mode: str = "adjacent",
        window: int = 8,
        stride: int = 1,
        transforms: ClipTransform | None = None,
        all_frame_targets: bool = False,
        key_filter: Callable[[FrameRecord], bool] | None = None,
        seed: int = 0,
        skip_unreadable: bool = False,
    ):
        """``skip_unreadable``: a clip whose frames cannot be decoded (corrupt, truncated, missing) is
        reported with the file and frame and replaced by the next item instead of failing (training
        with ``data.skip_invalid``); by default the ``DatasetError`` propagates."""
        if mode not in CLIP_MODES:
            raise ConfigError(f"config key 'data.clip_mode' = {mode!r}: expected one of {', '.join(CLIP_MODES)}")
        if num_frames < 1:
            raise ConfigError(f"config key 'data.num_frames' = {num_frames}: expected >= 1")
        if stride < 1:
            raise ConfigError(f"config key 'data.stride' = {stride}: expected >= 1")
        if window < 0:
            raise ConfigError(f"config key 'data.window' = {window}: expected >= 0")
        if seed < 0:
            raise ConfigError(f"config key 'train.seed' = {seed}: expected >= 0")
        self.index = index
        self.num_frames, self.mode, self.window, self.stride = num_frames, mode, window, stride
        self.transforms = transforms if transforms is not None else Compose([ToTensor(), ConvertBoxesToCxcywh()])
        self.all_frame_targets = all_frame_targets
        self.seed = seed
        self.skip_unreadable = skip_unreadable
        self.skipped: set[int] = set()  # image ids of key frames skipped by this copy (one per worker)
        self.epoch = 0
        self._items: list[tuple[int, int]] = [
            (v, p)
            for v, video in enumerate(index.videos)
            for p, frame in enumerate(video.frames)
            if key_filter is None or key_filter(frame)
        ]

    @property
    def key_frames(self) -> list[FrameRecord]:
        """The key frame of every item, in item order."""
        return [self.index.videos[v].frames[p] for v, p in self._items]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def clip_frames(self, i: int, rng: np.random.Generator | None = None) -> list[FrameRecord]:
        """The frames of item ``i``'s clip (key first); draws from the item's own rng unless given one."""
        v, p = self._items[i]
        video = self.index.videos[v]
        rng = rng if rng is not None else self._rng(i)
        positions = support_frame_indices(
            len(video.frames), p, self.num_frames, self.mode, self.window, self.stride, rng
        )
        return [video.frames[q] for q in positions]

    def _rng(self, i: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch if epoch is None else epoch, i))

    def __getitem__(self, i: int | tuple[int, int] | tuple[int, int, int]) -> dict[str, Any]:
        """Item ``i``, or ``(epoch, i)`` (a sampler's ``with_epoch``): augmented as in that epoch; or
        ``(epoch, i, short_side)``: resized to the short side the sampler drew for its batch."""
        epoch = short_side = None
        if isinstance(i, tuple):
            epoch, i, *rest = i
            short_side = rest[0] if rest else None
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} outside a dataset of {len(self)} key frames")
        if not self.skip_unreadable:
            return self._item(i, epoch, short_side)
        skipped: list[int] = []
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                # the item names the key frames skipped to get to it: loader workers each hold their own
                # dataset copy, so only the batches bring every worker's skips to the training loop
                return {**self._item(j, epoch, short_side), "skipped": skipped}
            except DatasetError as exc:
                v, p = self._items[j]
                skipped.append(self.index.videos[v].frames[p].image_id)
                self.skipped.add(skipped[-1])
                log.warning("skipping a clip (data.skip_invalid): %s", exc)
        raise DatasetError([], header=f"no readable clip in {self.index.source}: every frame failed to decode")

    def _item(self, i: int, epoch: int | None = None, short_side: int | None = None) -> dict[str, Any]:
        rng = self._rng(i, epoch)
        frames = self.clip_frames(i, rng)
        images = _read_clip(frames)
        targets = [_raw_target(f, img) for f, img in zip(frames, images, strict=True)]
        if short_side is None:
            images, targets = self.transforms(images, targets, rng)
        else:
            images, targets = self.transforms(images, targets, rng, short_side=short_side)  # a Compose
        if not all(isinstance(img, torch.Tensor) and img.ndim == 3 for img in images):
            raise TypeError("clip transforms must end with ToTensor (images as [3, h, w] tensors)")
        if any("size" not in t for t in targets):
            raise TypeError("clip transforms must end with ConvertBoxesToCxcywh (targets need 'size')")
        targets = [_tensor_target(t) for t in targets]
        key_id = frames[0].frame_id
        item: dict[str, Any] = {
            "images": torch.stack(images).float(),
            "target": targets[0],
            "frame_offsets": torch.tensor([f.frame_id - key_id for f in frames], dtype=torch.int64),
        }
        if self.all_frame_targets:
            item["frame_targets"] = targets
        return item


def _read_clip(frames: list[FrameRecord]) -> list[np.ndarray]:
    """Decode each distinct frame once (clamped clips repeat frames); all must share the key's size."""
    decoded: dict[int, np.ndarray] = {}
    images = []
    for frame in frames:
        if frame.image_id not in decoded:
            decoded[frame.image_id] = read_frame(frame)
        images.append(decoded[frame.image_id])
    key_shape = images[0].shape[:2]
    for frame, img in zip(frames[1:], images[1:], strict=True):
        if img.shape[:2] != key_shape:
            raise DatasetError(
                Problem(
                    str(frame.path),
                    f"image_id {frame.image_id} (video_id {frame.video_id})",
                    "size",
                    f"decoded size (h, w) {img.shape[:2]} differs from its key frame's {key_shape} "
                    f"({frames[0].path}); frames of one video must have one size",
                ),
                header="cannot build clip",
            )
    return images


_warned_sizes: set[int] = set()


def _raw_target(frame: FrameRecord, image: np.ndarray) -> dict[str, Any]:
    """The index's target for one frame: boxes x1y1x2y2 pixels float32 ``[N, 4]``, labels int64 ``[N]``."""
    h, w = image.shape[:2]
    if (frame.height, frame.width) != (h, w) and frame.image_id not in _warned_sizes:
        _warned_sizes.add(frame.image_id)
        log.warning(
            "%s (image_id %d): the index says %dx%d (w x h) but the file is %dx%d; using the file's size",
            frame.path, frame.image_id, frame.width, frame.height, w, h,
        )
    return {
        "boxes": np.asarray(frame.boxes, dtype=np.float32).reshape(-1, 4).copy(),
        "labels": np.asarray(frame.labels, dtype=np.int64).reshape(-1).copy(),
        "image_id": frame.image_id,
        "orig_size": (h, w),
        "labelled": frame.labelled,
    }


def _tensor_target(target: dict[str, Any]) -> dict[str, Any]:
    return {
        "boxes": torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1),
        "image_id": torch.tensor(int(target["image_id"]), dtype=torch.int64),
        "orig_size": torch.as_tensor(target["orig_size"], dtype=torch.int64).reshape(2),
        "size": torch.as_tensor(target["size"], dtype=torch.int64).reshape(2),
        "labelled": torch.tensor(bool(target.get("labelled", True))),
    }
