"""``Detector``: a trained image model (baseline or distilled student) as a callable on frames;
``ClipDetector``: a video teacher on clips (a key frame and its support frames).

>>> from v2idetr import Detector
>>> det = Detector.from_checkpoint("runs/student/best.ckpt")
>>> result = det(frame)            # numpy H x W x 3 uint8 RGB, a PIL image or a [3, H, W] tensor
>>> result.boxes, result.scores, result.labels, result.names
>>> teacher = ClipDetector.from_checkpoint("runs/teacher/best.ckpt")
>>> results = teacher.predict_video(frames)   # every frame of one video -> one Detections per frame
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from v2idetr.config import Config
from v2idetr.data.clips import ClipSampling
from v2idetr.deploy.clips import clip_positions
from v2idetr.deploy.engines import build_engine
from v2idetr.deploy.inference_model import InferenceModel
from v2idetr.deploy.live import END, LiveFrame, LiveReader, LiveSpec, LiveStream, live_source, teacher_refused
from v2idetr.deploy.preprocess import PreparedBatch, as_rgb_array, prepare_batch, split_frames
from v2idetr.devices import resolve_device
from v2idetr.engine.checkpoint import Checkpoint, load_checkpoint
from v2idetr.engine.inference import eval_clip_mode
from v2idetr.engine.metrics import Protocol, resolve_protocol, select_detections
from v2idetr.engine.weights import load_model
from v2idetr.errors import CheckpointError, ConfigError
from v2idetr.models.fold_norms import fold_backbone_norms
from v2idetr.precision import PRECISIONS


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
    #: None for an image model; a video teacher's clips otherwise (``predict`` then streams clips).
    clip_sampling: ClipSampling | None = None
    #: What ran, in words (``v2idetr predict`` prints it).
    model_description = "image model"

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

    def stream(
        self, source: str, input_format: str | None = None, max_frames: int | None = None, keep_all: bool = False
    ) -> Iterator[tuple[LiveFrame, Detections]]:
        """Detect on a live source (a stream URL, or a device with ``input_format``; see ``deploy.live``)
        as it arrives: ``(frame, detections)`` per processed frame, ``frame.pixels`` RGB, ``frame.position``
        its place in the source (gaps where frames were dropped), ``frame.time_s`` its time.

        Real time unless ``keep_all``: while the loop body runs, the frames that arrive are dropped but the
        newest, so each detection is for the most recent frame. Stops after ``max_frames`` frames, when the
        source ends, or when the loop is left (``break``), which also closes the source.
        """
        if self.clip_sampling is not None:
            raise teacher_refused(source)
        spec = live_source(source, input_format) or LiveSpec(str(source), input_format)
        reader = LiveReader(LiveStream(spec), capacity=8 if keep_all else 1, keep_all=keep_all,
                            max_frames=max_frames).start()
        try:
            while (item := reader.queue.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                yield item, self.predict_frames([item.pixels])[0]
        finally:
            reader.stop()

    def __call__(self, inputs: Any) -> Detections | list[Detections]:
        """One frame -> ``Detections``; a list of frames or a 4-D batch -> a list of them."""
        frames, was_batch = split_frames(inputs)
        results = self.predict_frames(frames)
        return results if was_batch else results[0]



def _wrong_kind(checkpoint: Any, teacher: bool) -> CheckpointError:
    where = f"{checkpoint}: " if checkpoint is not None else ""
    if teacher:
        return CheckpointError(
            f"{where}this checkpoint is a video teacher, which needs clips (a key frame and its support "
            "frames), never single frames: use ClipDetector.from_checkpoint(...) and its predict_clips() "
            "or predict_video(), or `v2idetr predict` (it builds the clips from the videos); Detector runs "
            "image models (a baseline or a distilled student)"
        )
    return CheckpointError(f"{where}this checkpoint is an image model: run it with Detector (ClipDetector runs video teachers)")


class _TorchRuntime(FrameDetector):
    """A checkpoint's model in PyTorch, on CPU or CUDA, under autocast for fp16/bf16.

    ``score_thresh`` / ``nms_iou`` default to the checkpoint's evaluation protocol (``eval.*`` of its
    config), so what ``predict`` draws is what ``eval`` scored.
    """

    runs_teachers = False  # which checkpoints the class accepts: video teachers or image models

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Config,
        meta: dict[str, Any],
        device: str = "auto",
        precision: str = "fp32",
        score_thresh: float | None = None,
        nms_iou: float | None = None,
        engine: str = "eager",
        fold_norms: bool = True,
    ):
        if (meta.get("kind") == "teacher") != self.runs_teachers:
            raise _wrong_kind(meta.get("checkpoint"), not self.runs_teachers)
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
        if fold_norms:  # on a copy: the caller's model stays trainable
            model = fold_backbone_norms(copy.deepcopy(model).eval())
        self.model = InferenceModel(model, cfg.eval.num_select).to(self.device).eval()
        self.engine = engine
        self._forward = build_engine(self.model, engine, self.device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Checkpoint,
        device: str = "auto",
        precision: str = "fp32",
        score_thresh: float | None = None,
        nms_iou: float | None = None,
        engine: str = "eager",
        fold_norms: bool = True,
    ) -> Self:
        """Load a checkpoint (``best.ckpt`` / ``last.ckpt``) for inference; one of the other kind
        (teacher for ``Detector``, image model for ``ClipDetector``) is a ``CheckpointError`` naming it.
        ``engine``: ``eager``, ``compile`` or ``graph`` (CUDA graphs; see ``deploy.engines``);
        ``fold_norms``: the backbone's batch norms folded into its convolutions (``models.fold_norms``:
        the same outputs, faster)."""
        ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(Path(path))
        if (ckpt.kind == "teacher") != cls.runs_teachers:
            raise _wrong_kind(ckpt.path or path, not cls.runs_teachers)
        model, cfg, meta = load_model(ckpt, device="cpu")
        return cls(model, cfg, meta, device, precision, score_thresh, nms_iou, engine, fold_norms)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def run(self, batch: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._autocast():
            scores, labels, boxes = self._forward(
                batch.images.to(self.device, non_blocking=True),
                batch.image_sizes.to(self.device),
                batch.orig_sizes.to(self.device),
            )
        return scores.float().cpu(), labels.cpu(), boxes.float().cpu()


class Detector(_TorchRuntime):
    """Pre-processing, the image model, top-k, score threshold and NMS, on CPU or CUDA.

    ``score_thresh`` / ``nms_iou`` default to the checkpoint's evaluation protocol (``eval.*`` of its
    config), so what ``predict`` draws is what ``eval`` scored. ``precision`` fp16/bf16 (CUDA only)
    runs the model under autocast. A video teacher's checkpoint is refused: see ``ClipDetector``.
    """

    def prepare(self, frames: list[np.ndarray]) -> PreparedBatch:
        return prepare_batch(frames, self.cfg.data.test_size, self.cfg.data.max_size or None)


class ClipDetector(_TorchRuntime):
    """A video teacher (``VideoTeacher`` checkpoint) on clips, with ``eval``'s clips and resize.

    A clip is the key frame followed by its ``T - 1`` support frames in temporal order, all of one
    size; ``clip_positions(n, key)`` gives the positions ``v2idetr eval`` uses in a video of ``n``
    frames (mode ``adjacent``, or ``past`` for causal teachers; clamped at the video ends), and
    ``predict_video`` applies them to every frame of a video. Single frames are refused: a teacher
    run on a made-up clip would give detections nobody evaluated.
    """

    runs_teachers = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.clip_sampling = ClipSampling.of(self.cfg.data, mode=eval_clip_mode(self.cfg))
        self.model_description = f"teacher ({self.num_frames}-frame clips)"

    @property
    def num_frames(self) -> int:
        """T, the frames per clip (key frame included)."""
        assert self.clip_sampling is not None
        return self.clip_sampling.num_frames

    def clip_positions(self, num_frames_in_video: int, key: int) -> list[int]:
        """Positions of key ``key``'s clip in a video of ``num_frames_in_video`` frames (key first)."""
        assert self.clip_sampling is not None
        return clip_positions(self.clip_sampling, num_frames_in_video)(key)

    def _single_frames(self) -> TypeError:
        return TypeError(
            f"this ClipDetector runs a video teacher on {self.num_frames}-frame clips, not on single frames: "
            "call predict_clips([[key, support, ...], ...]) or predict_video(all frames of a video), "
            "or use `v2idetr predict`"
        )

    def prepare(self, frames: list[np.ndarray]) -> PreparedBatch:
        raise self._single_frames()

    def predict_frames(self, frames: list[np.ndarray]) -> list[Detections]:
        raise self._single_frames()

    def __call__(self, inputs: Any) -> Detections | list[Detections]:
        raise self._single_frames()

    def prepare_clips(self, clips: Sequence[Sequence[Any]]) -> PreparedBatch:
        """Clips -> ``images [B, T, 3, H, W]`` (every frame of a clip resized alike), key-frame sizes."""
        if not clips:
            raise ValueError("prepare_clips: no clips")
        T, flat = self.num_frames, []
        for i, clip in enumerate(clips):
            if isinstance(clip, (np.ndarray, torch.Tensor)) and clip.ndim == 3:
                raise TypeError(f"clip {i}: a single frame; a clip is a list of {T} frames (key first)")
            frames = [as_rgb_array(f, f"clip {i}, frame {j}") for j, f in enumerate(clip)]
            if len(frames) != T:
                raise ValueError(
                    f"clip {i}: this teacher takes clips of {T} frames (key first, then its support frames in "
                    f"temporal order), got {len(frames)}"
                )
            shapes = [f.shape[:2] for f in frames]
            if len(set(shapes)) > 1:
                raise ValueError(f"clip {i}: the frames of a clip must have one size, got (h, w) {shapes}")
            flat += frames
        batch = prepare_batch(flat, self.cfg.data.test_size, self.cfg.data.max_size or None)
        images = batch.images.view(len(clips), T, *batch.images.shape[1:])
        return PreparedBatch(images, batch.image_sizes[::T].contiguous(), batch.orig_sizes[::T].contiguous())

    def predict_clips(self, clips: Sequence[Sequence[Any]]) -> list[Detections]:
        """One ``Detections`` per clip, for its key frame (boxes in the key frame's pixels)."""
        return list(self.detections(*self.run(self.prepare_clips(clips))))

    def predict_video(self, frames: Any, batch_size: int = 8) -> list[Detections]:
        """Every frame of one video (a list, or a 4-D batch) as key frame, with ``eval``'s clips."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(frames, (np.ndarray, torch.Tensor)):
            frames = list(frames)
        pixels, was_batch = split_frames(frames)
        if not was_batch:
            raise TypeError("predict_video: expected every frame of a video (a list or a 4-D batch), got one frame")
        if not pixels:
            return []
        positions = clip_positions(self.clip_sampling, len(pixels))  # type: ignore[arg-type]
        results: list[Detections] = []
        for start in range(0, len(pixels), batch_size):
            keys = range(start, min(start + batch_size, len(pixels)))
            results += self.predict_clips([[pixels[p] for p in positions(k)] for k in keys])
        return results


def load_detector(path: str | Path, **kwargs: Any) -> Detector | ClipDetector:
    """``Detector`` for an image model's checkpoint, ``ClipDetector`` for a video teacher's."""
    ckpt = load_checkpoint(Path(path))
    cls = ClipDetector if ckpt.kind == "teacher" else Detector
    return cls.from_checkpoint(ckpt, **kwargs)
