"""``Detector``: a trained image model (baseline or distilled student) as a callable on frames.

>>> from v2idetr import Detector
>>> det = Detector.from_checkpoint("runs/student/best.ckpt")
>>> result = det(frame)            # numpy H x W x 3 uint8 RGB, a PIL image or a [3, H, W] tensor
>>> result.boxes, result.scores, result.labels, result.names
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from v2idetr.config import Config
from v2idetr.deploy.inference_model import InferenceModel
from v2idetr.deploy.preprocess import PreparedBatch, prepare_batch, split_frames
from v2idetr.engine.metrics import Protocol, resolve_protocol, select_detections
from v2idetr.engine.trainer import resolve_device
from v2idetr.errors import CheckpointError, ConfigError

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Detections:
    """The kept detections of one frame, by descending score.

    ``boxes [K, 4]`` float32 x1, y1, x2, y2 in pixels of the frame as given; ``scores [K]`` float32;
    ``labels [K]`` int64 class indices into ``class_names`` (``category_ids`` maps them back to the
    dataset's COCO category ids).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list, repr=False)
    category_ids: list[int] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(len(self.scores))

    @property
    def names(self) -> list[str]:
        return [self.class_names[int(i)] for i in self.labels]

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO result records (``bbox`` as x, y, w, h) for ``image_id``."""
        return [
            {
                "image_id": int(image_id),
                "category_id": int(self.category_ids[int(label)]),
                "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                "score": round(float(score), 5),
            }
            for (x1, y1, x2, y2), score, label in zip(self.boxes, self.scores, self.labels, strict=True)
        ]


class FrameDetector:
    """What every runtime shares: frames in, thresholded ``Detections`` out.

    Subclasses (the PyTorch ``Detector``, the ONNX Runtime ``OnnxDetector``) implement ``prepare``
    and ``run``; score threshold, NMS and the result type are the same for all, so their outputs
    can be compared box for box.
    """

    protocol: Protocol
    class_names: list[str]
    category_ids: list[int]

    @property
    def score_thresh(self) -> float:
        return self.protocol.score_thresh

    def prepare(self, frames: list[np.ndarray]) -> PreparedBatch:
        raise NotImplementedError

    def run(self, batch: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k ``(scores [B, K], labels [B, K], boxes [B, K, 4])`` on the CPU, before threshold and NMS."""
        raise NotImplementedError

    def detections(self, scores: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> Iterator[Detections]:
        """Threshold + NMS of top-k outputs ``[B, K]``, one ``Detections`` per frame."""
        for s, lab, b in zip(scores.numpy(), labels.numpy(), boxes.numpy(), strict=True):
            keep = select_detections(b, s, self.protocol.score_thresh, self.protocol.nms_iou)
            yield Detections(b[keep], s[keep], lab[keep], self.class_names, self.category_ids)

    def predict_frames(self, frames: list[np.ndarray]) -> list[Detections]:
        """``[H, W, 3]`` uint8 RGB frames (any sizes) -> one ``Detections`` per frame."""
        return list(self.detections(*self.run(self.prepare(frames))))

    def __call__(self, inputs: Any) -> Detections | list[Detections]:
        """One frame -> ``Detections``; a list of frames or a 4-D batch -> a list of them."""
        frames, was_batch = split_frames(inputs)
        results = self.predict_frames(frames)
        return results if was_batch else results[0]


class Detector(FrameDetector):
    """Pre-processing, the image model, top-k, score threshold and NMS, on CPU or CUDA.

    ``score_thresh`` / ``nms_iou`` default to the checkpoint's evaluation protocol (``eval.*`` of its
    config), so what ``predict`` draws is what ``eval`` scored. ``precision`` fp16/bf16 (CUDA only)
    runs the model under autocast.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Config,
        meta: dict[str, Any],
        device: str = "auto",
        precision: str = "fp32",
        score_thresh: float | None = None,
        nms_iou: float | None = None,
    ):
        if meta.get("kind") == "teacher":
            raise CheckpointError(
                "this checkpoint is a video teacher: Detector runs image models (a baseline or a distilled "
                "student); evaluate teachers on clips with `v2idetr eval`"
            )
        if precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            raise ConfigError(f"precision {precision!r} needs a CUDA device (got {self.device})")
        self.cfg = cfg
        self.meta = meta
        self.precision = precision
        self.class_names = list(meta.get("class_names", []))
        self.category_ids = [int(c) for c in meta.get("category_ids", [])]
        self.protocol = resolve_protocol(
            cfg.eval.protocol,
            cfg.eval.score_thresh if score_thresh is None else score_thresh,
            cfg.eval.nms_iou if nms_iou is None else nms_iou,
        )
        self.model = InferenceModel(model, cfg.eval.num_select).to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "fp32",
        score_thresh: float | None = None,
        nms_iou: float | None = None,
    ) -> Detector:
        """Load a baseline or student checkpoint (``best.ckpt`` / ``last.ckpt``) for inference."""
        from v2idetr.api import load_model

        model, cfg, meta = load_model(path, device="cpu")
        return cls(model, cfg, meta, device, precision, score_thresh, nms_iou)

    def prepare(self, frames: list[np.ndarray]) -> PreparedBatch:
        return prepare_batch(frames, self.cfg.data.test_size, self.cfg.data.max_size or None)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def run(self, batch: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._autocast():
            scores, labels, boxes = self.model(
                batch.images.to(self.device, non_blocking=True),
                batch.image_sizes.to(self.device),
                batch.orig_sizes.to(self.device),
            )
        return scores.float().cpu(), labels.cpu(), boxes.float().cpu()
