"""Clip transforms: one set of random parameters per clip, applied to every frame and its boxes.

A clip transform is called as ``transform(images, targets, rng) -> (images, targets)`` where
``images`` is a list of ``T`` frames (``H x W x 3`` uint8 arrays or PIL images; index 0 is the key
frame) and ``targets`` a list of ``T`` dicts with ``boxes`` float32 ``[N, 4]`` as ``x1, y1, x2, y2``
pixels and ``labels`` int64 ``[N]``. All frames of a clip have the same size. The caller's
``rng`` (the dataset's per-item generator) supplies every random number, so an item's
augmentation is reproducible from (seed, epoch, item) alone.

Geometric transforms must be identical for every frame of a clip: the teacher aligns support
frames with the key frame, and a per-frame flip or crop would teach it that lesions jump.
``ToTensor`` and ``ConvertBoxesToCxcywh`` come last and produce the model's inputs: RGB in
``[0, 1]``. The normalisation a backbone expects is the backbone's own (``models.backbone``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageEnhance
from torchvision.ops import box_convert

from v2idetr.config import DataConfig
from v2idetr.errors import ConfigError

log = logging.getLogger(__name__)

Images = list[Any]
Targets = list[dict[str, Any]]


class ClipTransform(Protocol):
    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator) -> tuple[Images, Targets]: ...


def _pil(image: Any) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))


def image_size(image: Any) -> tuple[int, int]:
    """``(h, w)`` of a PIL image, an ``H x W x C`` array or a ``[C, H, W]`` tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return int(image.shape[0]), int(image.shape[1])


def _with_boxes(target: dict[str, Any], boxes: np.ndarray, keep: np.ndarray | None = None) -> dict[str, Any]:
    out = dict(target)
    out["boxes"] = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if keep is not None:
        out["boxes"] = out["boxes"][keep]
        out["labels"] = np.asarray(target["labels"])[keep]
    return out


def _boxes(target: dict[str, Any]) -> np.ndarray:
    return np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)


class Compose:
    """Applies clip transforms in order, all drawing from the same ``rng``.

    ``short_side`` (``data.multiscale=batch``: the size the sampler drew for the item's batch) goes to
    the ``RandomResize`` steps in place of their own draw."""

    def __init__(self, transforms: Sequence[ClipTransform]):
        self.transforms = list(transforms)

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator,
                 short_side: int | None = None) -> tuple[Images, Targets]:
        for t in self.transforms:
            if short_side is not None and isinstance(t, RandomResize):
                images, targets = t(images, targets, rng, short_side=short_side)
            else:
                images, targets = t(images, targets, rng)
        return images, targets

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(t) for t in self.transforms)})"


class RandomResize:
    """Short side to a size drawn from ``sizes``, long side capped at ``max_size``, aspect kept.

    The output size is computed once from the key frame and used for every frame (bilinear, PIL);
    boxes are scaled exactly by the per-axis ratio ``new / old``. A given ``short_side`` (one of
    ``sizes``: the batch's draw) replaces the clip's own draw, which is still taken from ``rng`` so
    that the rest of the clip's augmentation does not depend on who chose the size.
    """

    def __init__(self, sizes: Sequence[int], max_size: int | None = None):
        if not sizes or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must be positive integers, got {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.max_size = int(max_size) if max_size else None

    def output_size(self, h: int, w: int, short: int) -> tuple[int, int]:
        scale = short / min(h, w)
        if self.max_size is not None and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator,
                 short_side: int | None = None) -> tuple[Images, Targets]:
        short = self.sizes[int(rng.integers(len(self.sizes)))]
        if short_side is not None:
            if short_side not in self.sizes:
                raise ValueError(f"short side {short_side} is not one of the sizes {self.sizes}")
            short = short_side
        h, w = image_size(images[0])
        new_h, new_w = self.output_size(h, w, short)
        out_images, out_targets = [], []
        for image, target in zip(images, targets, strict=True):
            fh, fw = image_size(image)
            out_images.append(_pil(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
            ratio = np.array([new_w / fw, new_h / fh, new_w / fw, new_h / fh], dtype=np.float32)
            out_targets.append(_with_boxes(target, _boxes(target) * ratio))
        return out_images, out_targets

    def __repr__(self) -> str:
        return f"RandomResize(sizes={self.sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror the whole clip with probability ``p``; ``x1' = W - x2``, ``x2' = W - x1``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator) -> tuple[Images, Targets]:
        if rng.random() >= self.p:
            return images, targets
        out_images, out_targets = [], []
        for image, target in zip(images, targets, strict=True):
            w = image_size(image)[1]
            out_images.append(_pil(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
            boxes = _boxes(target)
            flipped = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
            out_targets.append(_with_boxes(target, flipped))
        return out_images, out_targets

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCropKeepBoxes:
    """With probability ``p``, crop the clip to a random window that holds every key-frame box whole.

    The window is at least ``min_scale`` of each side and has integer pixel corners (so boxes stay
    aligned with pixels). Boxes of support frames are clipped to the window and dropped when empty.
    With ``keep_aspect`` the window has the frame's aspect ratio (one scale for both sides), so that
    clips resized to one short side come out at one size and a batch of them needs no padding.
    """

    def __init__(self, p: float = 0.5, min_scale: float = 0.6, keep_aspect: bool = False):
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.p, self.min_scale, self.keep_aspect = p, min_scale, keep_aspect

    @staticmethod
    def _span(length: int, lo: float | None, hi: float | None) -> tuple[int, int]:
        """The pixel span ``[lo, hi]`` of the boxes on one axis (empty when there is no box)."""
        if lo is None or hi is None:
            return length, 0  # no box: any window
        return min(max(math.floor(lo), 0), length), min(max(math.ceil(hi), 0), length)

    def _window(self, length: int, span: tuple[int, int], rng: np.random.Generator,
                size: int | None = None) -> tuple[int, int]:
        """Start and size (drawn unless given) of a 1-D window within ``[0, length]`` that holds ``span``."""
        lo_i, hi_i = span
        if size is None:
            size_min = max(math.ceil(self.min_scale * length), hi_i - lo_i, 1)
            size = int(rng.integers(size_min, length + 1))
        start_lo, start_hi = max(0, hi_i - size), min(lo_i, length - size)
        return int(rng.integers(start_lo, start_hi + 1)), size

    def _aspect_sizes(self, h: int, w: int, span_x: tuple[int, int], span_y: tuple[int, int],
                      rng: np.random.Generator) -> tuple[int, int]:
        """Window width and height at one scale of the frame that still hold the boxes' spans."""
        lowest = max(self.min_scale, (span_x[1] - span_x[0]) / w, (span_y[1] - span_y[0]) / h)
        scale = float(rng.uniform(lowest, 1.0))
        cw = min(w, max(math.ceil(scale * w), span_x[1] - span_x[0], 1))
        ch = min(h, max(round(cw * h / w), span_y[1] - span_y[0], 1))
        return cw, ch

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator) -> tuple[Images, Targets]:
        if rng.random() >= self.p:
            return images, targets
        h, w = image_size(images[0])
        key = _boxes(targets[0])
        has = len(key) > 0
        span_x = self._span(w, key[:, 0].min() if has else None, key[:, 2].max() if has else None)
        span_y = self._span(h, key[:, 1].min() if has else None, key[:, 3].max() if has else None)
        cw = ch = None
        if self.keep_aspect:
            cw, ch = self._aspect_sizes(h, w, span_x, span_y, rng)
        x0, cw = self._window(w, span_x, rng, cw)
        y0, ch = self._window(h, span_y, rng, ch)
        out_images, out_targets = [], []
        for t, (image, target) in enumerate(zip(images, targets, strict=True)):
            out_images.append(_pil(image).crop((x0, y0, x0 + cw, y0 + ch)))
            boxes = _boxes(target) - np.array([x0, y0, x0, y0], dtype=np.float32)
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, cw)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, ch)
            keep = None
            if t > 0:
                keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out_targets.append(_with_boxes(target, boxes, keep))
        return out_images, out_targets

    def __repr__(self) -> str:
        return f"RandomCropKeepBoxes(p={self.p}, min_scale={self.min_scale}, keep_aspect={self.keep_aspect})"


class PhotometricJitter:
    """With probability ``p``, brightness then contrast change with one pair of factors per clip.

    Factors are drawn uniformly from ``[1 - brightness, 1 + brightness]`` and
    ``[1 - contrast, 1 + contrast]`` (PIL ``ImageEnhance``; contrast pivots on each frame's mean grey).
    """

    def __init__(self, p: float = 0.5, brightness: float = 0.2, contrast: float = 0.2):
        self.p, self.brightness, self.contrast = p, brightness, contrast

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator) -> tuple[Images, Targets]:
        if rng.random() >= self.p:
            return images, targets
        b = float(rng.uniform(1 - self.brightness, 1 + self.brightness))
        c = float(rng.uniform(1 - self.contrast, 1 + self.contrast))
        out = [ImageEnhance.Contrast(ImageEnhance.Brightness(_pil(img)).enhance(b)).enhance(c) for img in images]
        return out, targets

    def __repr__(self) -> str:
        return f"PhotometricJitter(p={self.p}, brightness={self.brightness}, contrast={self.contrast})"


class ToTensor:
    """Frames to float32 RGB ``[3, h, w]`` tensors in ``[0, 1]`` (the model normalises them itself)."""

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator) -> tuple[Images, Targets]:
        return [TF.to_tensor(_pil(img).convert("RGB")) for img in images], targets

    def __repr__(self) -> str:
        return "ToTensor()"


class ConvertBoxesToCxcywh:
    """Boxes to normalised ``cx, cy, w, h`` relative to the current (unpadded) image; records ``size``.

    Boxes are first clipped to the image; boxes left without area are dropped (with their labels),
    since they cannot be matched or drawn. Output boxes/labels/size are tensors.
    """

    def __call__(self, images: Images, targets: Targets, rng: np.random.Generator) -> tuple[Images, Targets]:
        out_targets = []
        for image, target in zip(images, targets, strict=True):
            h, w = image_size(image)
            boxes = torch.as_tensor(_boxes(target))
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not bool(keep.all()):
                log.debug("image_id %s: dropped %d empty box(es)", target.get("image_id"), int((~keep).sum()))
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            out = dict(target)
            out["boxes"] = box_convert(boxes[keep], "xyxy", "cxcywh") / scale
            out["labels"] = torch.as_tensor(np.asarray(target["labels"]), dtype=torch.int64).reshape(-1)[keep]
            out["size"] = torch.tensor([h, w], dtype=torch.int64)
            out_targets.append(out)
        return images, out_targets

    def __repr__(self) -> str:
        return "ConvertBoxesToCxcywh()"


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"config key 'data.{name}' = {value}: expected a probability in [0, 1]")


def _check_sizes(cfg: DataConfig) -> None:
    if not cfg.train_sizes or any(s < 1 for s in cfg.train_sizes):
        raise ConfigError(f"config key 'data.train_sizes' = {cfg.train_sizes}: expected positive integers")
    if cfg.test_size < 1:
        raise ConfigError(f"config key 'data.test_size' = {cfg.test_size}: expected a positive integer")
    if cfg.max_size < 0:
        raise ConfigError(f"config key 'data.max_size' = {cfg.max_size}: expected >= 0 (0: no cap)")


def build_train_transforms(cfg: DataConfig) -> Compose:
    """Flip, box-keeping crop, multi-scale resize, per-clip photometric jitter, tensor, cxcywh.

    The crop comes before the resize so that the output size is always the drawn scale. A short
    side is drawn per clip (the collate pads mixed sizes) unless the sampler gives one per batch
    (``data.multiscale=batch``, whose crops also keep the frame's aspect ratio: a batch of one size).
    """
    _check_sizes(cfg)
    for name in ("hflip", "crop", "photometric"):
        _check_probability(name, getattr(cfg, name))
    steps: list[ClipTransform] = []
    if cfg.hflip > 0:
        steps.append(RandomHorizontalFlip(cfg.hflip))
    if cfg.crop > 0:
        steps.append(RandomCropKeepBoxes(cfg.crop, keep_aspect=cfg.multiscale == "batch"))
    steps.append(RandomResize(cfg.train_sizes, cfg.max_size or None))
    if cfg.photometric > 0:
        steps.append(PhotometricJitter(cfg.photometric))
    steps += [ToTensor(), ConvertBoxesToCxcywh()]
    return Compose(steps)


def build_eval_transforms(cfg: DataConfig) -> Compose:
    """Deterministic: resize to ``test_size`` (long side capped at ``max_size``), tensor, cxcywh."""
    _check_sizes(cfg)
    return Compose([RandomResize([cfg.test_size], cfg.max_size or None), ToTensor(), ConvertBoxesToCxcywh()])
