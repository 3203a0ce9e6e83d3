"""ONNX export of an image model, and ``OnnxDetector``, its ONNX Runtime counterpart of ``Detector``.
A video teacher's checkpoint is refused: its clips have no fixed-input graph here.

The graph is ``InferenceModel`` (normalisation, padding mask, detector, top-k with boxes in
original-frame pixels) traced at a fixed ``size x size`` input with a dynamic batch axis:

    inputs   images       float32 [B, 3, size, size]  RGB in [0, 1], frame resized, zero-padded bottom/right
             image_sizes  int64   [B, 2]              (h, w) of the resized frame inside the padding
             orig_sizes   int64   [B, 2]              (h, w) of the original frame
    outputs  scores [B, K] float32 (descending), labels [B, K] int64, boxes [B, K, 4] float32 x1y1x2y2

Resizing keeps the aspect ratio as in evaluation (short side ``data.test_size``) with the long side
capped at ``size``; ``deploy.preprocess.prepare_batch(..., pad_to=(size, size))`` does it. Score
threshold and NMS are left to the caller (``OnnxDetector`` applies the checkpoint's protocol,
stored with class names in the model's metadata). Why fixed size: the deformable attention's level
shapes are baked into the trace; one export per input size is the price of a graph without Python.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from v2idetr.atomic import atomic_write
from v2idetr.deploy.preprocess import PreparedBatch, prepare_batch
from v2idetr.deploy.runtime import Detector, FrameDetector
from v2idetr.engine.checkpoint import load_checkpoint
from v2idetr.engine.metrics import resolve_protocol
from v2idetr.errors import CheckpointError, V2IDetrError

log = logging.getLogger(__name__)

INPUT_NAMES = ["images", "image_sizes", "orig_sizes"]
OUTPUT_NAMES = ["scores", "labels", "boxes"]
DEFAULT_OPSET = 17


@dataclass
class ExportResult:
    path: Path
    size: int
    max_abs_diff_scores: float
    max_abs_diff_boxes: float
    frames_compared: int


def export_input_sizes(test_size: int, max_size: int | None, size: int) -> tuple[int, int | None]:
    """``(test_size, max_size)`` for frames going into a ``size x size`` exported model."""
    return min(test_size, size), min(max_size, size) if max_size else size


def export_onnx(
    checkpoint: str | Path,
    out: str | Path | None = None,
    size: int | None = None,
    opset: int = DEFAULT_OPSET,
    sample_frames: list[np.ndarray] | None = None,
) -> ExportResult:
    """Write ``out`` (default: the checkpoint's path with ``.onnx``) and check it against PyTorch.

    The check runs ONNX Runtime and PyTorch on ``sample_frames`` (default: two random frames of
    different shapes) and reports the largest score and box differences.
    """
    ckpt = load_checkpoint(Path(checkpoint))
    if ckpt.kind == "teacher":
        raise CheckpointError(
            f"{checkpoint}: a video teacher cannot be exported to ONNX: only image models (a baseline or a "
            "distilled student) export; run the teacher with `v2idetr predict` or ClipDetector"
        )
    detector = Detector.from_checkpoint(ckpt, device="cpu")
    data = detector.cfg.data
    size = int(size or data.test_size)
    if size < 32:
        raise V2IDetrError(f"--size {size}: expected at least 32 pixels")
    out_path = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
    test_size, max_size = export_input_sizes(data.test_size, data.max_size or None, size)
    frames = sample_frames or _random_frames(size)
    example = prepare_batch(frames, test_size, max_size, pad_to=(size, size))
    metadata = {
        "v2idetr": json.dumps(
            {
                "size": size,
                "test_size": test_size,
                "max_size": max_size,
                "class_names": detector.class_names,
                "category_ids": detector.category_ids,
                "protocol": detector.protocol.name,
                "score_thresh": detector.protocol.score_thresh,
                "nms_iou": detector.protocol.nms_iou,
                "checkpoint": str(Path(checkpoint).resolve()),
            }
        )
    }
    atomic_write(out_path, lambda tmp: export_module(detector.model, example, tmp, opset, metadata))
    ours = detector.run(example)
    theirs = OnnxDetector(out_path).run(example)
    diff_scores = float((ours[0] - theirs[0]).abs().max())
    diff_boxes = float((ours[2] - theirs[2]).abs().max())
    log.info("%s: ONNX Runtime vs PyTorch on %d frames: max |d score| %.2e, max |d box| %.2e px",
             out_path, len(frames), diff_scores, diff_boxes)
    return ExportResult(out_path, size, diff_scores, diff_boxes, len(frames))


def _random_frames(size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        rng.integers(0, 256, (max(32, size * 3 // 4), size, 3), dtype=np.uint8),
    ]


def export_module(model: torch.nn.Module, example: PreparedBatch, path: Path, opset: int, metadata: dict[str, str]) -> None:
    """Trace ``model`` on ``example`` into an ONNX file at ``path`` with ``metadata`` properties."""
    import onnx

    with warnings.catch_warnings():
        # The trace fixes the feature-map shapes to this input size by design (module docstring).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example.images, example.image_sizes, example.orig_sizes),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES},
        )
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


class OnnxDetector(FrameDetector):
    """An exported model under ONNX Runtime, called like ``Detector`` (same threshold, NMS, results)."""

    model_description = "image model (ONNX)"

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        score_thresh: float | None = None,
        nms_iou: float | None = None,
        threads: int = 0,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
            raise V2IDetrError(f"{self.path}: cannot load the ONNX model ({exc})") from exc
        meta: dict[str, Any] = json.loads(self.session.get_modelmeta().custom_metadata_map.get("v2idetr", "{}"))
        if "size" not in meta:
            raise V2IDetrError(f"{self.path}: not exported by v2idetr (no 'v2idetr' metadata)")
        self.meta = meta
        self.size = int(meta["size"])
        self.class_names = list(meta["class_names"])
        self.category_ids = [int(c) for c in meta["category_ids"]]
        self.protocol = resolve_protocol(
            meta["protocol"],
            meta["score_thresh"] if score_thresh is None else score_thresh,
            meta["nms_iou"] if nms_iou is None else nms_iou,
        )

    def prepare(self, frames: list[np.ndarray]) -> PreparedBatch:
        return prepare_batch(frames, self.meta["test_size"], self.meta["max_size"], pad_to=(self.size, self.size))

    def run(self, batch: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feeds = {
            "images": batch.images.numpy(),
            "image_sizes": batch.image_sizes.numpy(),
            "orig_sizes": batch.orig_sizes.numpy(),
        }
        scores, labels, boxes = self.session.run(OUTPUT_NAMES, feeds)
        return torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(boxes)
