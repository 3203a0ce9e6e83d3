"""`v2idetr predict`: detections for an image, a folder of images, a video file or a dataset.

Streaming in three stages joined by bounded queues, so memory stays flat however long the video:
a reader thread decodes frames, the calling thread batches them through the model, a writer thread
draws and encodes the annotated output. A video teacher (``ClipDetector``) gets each key frame's
clip, built as ``v2idetr eval`` builds it, from a sliding window of the video's decoded frames
(``deploy.clips.ClipWindow``: at most ``stride * (T - 1) + 1`` frames, plus the batch); a key frame
goes to the model once its last support frame is decoded. Outputs (all written atomically):

- ``detections.json``: COCO result records (``image_id``, ``category_id``, ``bbox`` x,y,w,h,
  ``score``) plus ``video`` and ``frame_id``; ``v2idetr eval --predictions`` scores it. For a video
  file or an image folder, ``image_id`` is the frame's position + 1; for a dataset, its own ids.
- ``<video>.mp4`` per video (the source's frame rate; always for a video file or a live source,
  with ``save_video`` for other sources) and, with ``save_images``, one annotated PNG per frame.

A live source (a stream URL or an FFmpeg input device: ``deploy.live``) is read as it arrives, for
``max_frames`` frames or until Ctrl-C / SIGTERM, which end the run normally. It runs in real time: when
the model is slower than the source, the frames it has no time for are dropped (counted; ``image_id``
stays the frame's position + 1, and the mp4 keeps the source's timing) unless ``stream_buffer``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from v2idetr.atomic import atomic_write, atomic_write_json, remove_stale_temps
from v2idetr.data.clips import ClipSampling
from v2idetr.data.formats.media import IMAGE_EXTENSIONS, logged_image_size
from v2idetr.data.formats.scan import ProblemLog, Scan
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.data.io import read_frame
from v2idetr.data.load import load_index
from v2idetr.deploy.clips import ClipWindow
from v2idetr.deploy.live import (
    END,
    LiveFrame,
    LiveReader,
    LiveStream,
    live_source,
    stop_on_signals,
    teacher_refused,
)
from v2idetr.deploy.runtime import Detections, FrameDetector
from v2idetr.deploy.video import VideoWriter, draw_detections
from v2idetr.errors import ConfigError, DatasetError, Problem
from v2idetr.outputs import output_folder

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
_ABORT = object()  # sent instead of END when the run failed: partial outputs are dropped


@dataclass
class PredictResult:
    """What a prediction run wrote and how fast it went (end to end: decode, model, drawing, encode)."""

    out_dir: Path
    detections_json: Path
    videos: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    model: str = "image model"  # what ran (``FrameDetector.model_description``)
    window_peak: int = 0  # most decoded frames held at once to build clips (1 for an image model)
    dropped: int = 0  # frames of a live source decoded but not processed (no time for them)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Item:
    video: VideoRecord
    frame: FrameRecord
    pixels: np.ndarray
    first: bool  # first frame of its video
    last: bool  # last frame of its video (never known in advance for a live source)
    time_s: float | None = None  # a live frame's time since the first (the recording keeps it)


def open_source(source: str | Path | DatasetIndex, format: str = "auto", skip_invalid: bool = False) -> DatasetIndex:
    """Index whatever ``source`` is: an index already, one image, or anything ``load_index`` reads
    (labels are ignored; ``skip_invalid`` leaves unreadable frames and invalid records out)."""
    if isinstance(source, DatasetIndex):
        return source
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        plog = ProblemLog(str(path))
        size = logged_image_size(path, plog)
        if size is None:
            return Scan(None, plog).finish()
        video = VideoRecord(video_id=1, name=path.stem)
        video.frames = [FrameRecord(1, 1, 0, path, size[0], size[1], file_name=path.name)]
        return DatasetIndex(videos=[video], class_names=[], category_ids=[], source=str(path))
    return load_index(path, format=format, skip_invalid=skip_invalid)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "video"


def _read(index: DatasetIndex, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: decode frames in order into ``out`` (bounded), then ``END``; errors travel too."""
    try:
        for video in index.videos:
            n = len(video.frames)
            for i, frame in enumerate(video.frames):
                if stop.is_set():
                    return
                out.put(_Item(video, frame, read_frame(frame), i == 0, i == n - 1))
    except BaseException as exc:  # handed to the main thread, which raises it
        out.put(exc)
        return
    out.put(END)


def _live_item(video: VideoRecord, url: str) -> Callable[[LiveFrame], _Item]:
    """A live frame as the pipeline's item: ``image_id`` its position + 1, dropped frames leave gaps."""

    def item(frame: LiveFrame) -> _Item:
        h, w = frame.pixels.shape[:2]
        record = FrameRecord(frame.position + 1, video.video_id, frame.position, Path(url), w, h,
                             file_name=f"{frame.position:06d}", container_index=frame.position)
        return _Item(video, record, frame.pixels, frame.position == 0, False, frame.time_s)

    return item


class _Writer:
    """Writer thread: annotated mp4 per video and/or PNG per frame, in frame order."""

    def __init__(self, out_dir: Path, video_fps: Callable[[VideoRecord], float], save_video: bool, save_images: bool,
                 timestamps: bool = False):
        self.out_dir, self.video_fps = out_dir, video_fps
        self.save_video, self.save_images, self.timestamps = save_video, save_images, timestamps
        self.inbox: queue.Queue = queue.Queue(maxsize=64)
        self.videos: list[Path] = []
        self.images: list[Path] = []
        self.error: BaseException | None = None
        self._writer: VideoWriter | None = None
        self._thread = threading.Thread(target=self._run, name="v2idetr-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (job := self.inbox.get()) is not END and job is not _ABORT:
                self._write(*job)
            if job is END:
                if self._writer is not None:  # a live source's video: its last frame was not known
                    self.videos.append(self._writer.close())
                    self._writer = None
                return
        except BaseException as exc:
            self.error = exc
            while (job := self.inbox.get()) is not END and job is not _ABORT:  # drain so the producer never blocks
                pass
        if self._writer is not None:
            self._writer.abort()

    def _write(self, item: _Item, det: Detections) -> None:
        if not (self.save_video or self.save_images):
            return
        annotated = draw_detections(item.pixels, det)
        name = _safe_name(item.video.name)
        if self.save_video:
            if item.first or self._writer is None:  # (a live source's first frames may have been dropped)
                self._writer = VideoWriter(self.out_dir / f"{name}.mp4", self.video_fps(item.video), self.timestamps)
            self._writer.write(annotated, item.time_s)
            if item.last:
                self.videos.append(self._writer.close())
                self._writer = None
        if self.save_images:
            stem = Path(item.frame.file_name).stem if item.frame.container_index is None else f"{item.frame.frame_id:06d}"
            path = self.out_dir / "frames" / name / f"{stem}.png"
            atomic_write(path, lambda tmp: Image.fromarray(annotated).save(tmp, format="PNG"))
            self.images.append(path)

    def put(self, item: _Item, det: Detections) -> None:
        if self.error is not None:
            raise self.error
        self.inbox.put((item, det))

    def finish(self, failed: bool = False) -> None:
        """Wait for the queued frames; after a failure, drop the video being written instead."""
        self.inbox.put(_ABORT if failed else END)
        self._thread.join()
        if self.error is not None and not failed:
            raise self.error


_IMAGE = ClipSampling(num_frames=1, mode="adjacent", window=0, stride=1)  # an image model's "clips"


class _Clips:
    """Reader items -> ``(key item, clip pixels)`` in frame order, through one ``ClipWindow`` per video."""

    def __init__(self, sampling: ClipSampling):
        self.sampling = sampling
        self.window: ClipWindow[_Item] | None = None
        self.size: tuple[int, int] = (0, 0)  # (h, w) of the current video's first frame
        self.peak = 0

    def push(self, item: _Item) -> list[tuple[_Item, list[np.ndarray]]]:
        if self.sampling.num_frames == 1:  # an image model: every frame is its own clip, at once
            self.peak = 1
            return [(item, [item.pixels])]
        size = item.pixels.shape[:2]
        if item.first:
            self.window, self.size = ClipWindow(len(item.video.frames), self.sampling), size
        elif self.sampling.num_frames > 1 and size != self.size:
            raise DatasetError(
                Problem(str(item.frame.path), f"frame {item.frame.frame_id} of video {item.video.name!r}", "size",
                        f"decoded size (h, w) {size} differs from the video's first frame {self.size}; "
                        "a teacher's clips need one size per video"),
                header="cannot build clip",
            )
        assert self.window is not None
        ready = self.window.push(item)
        self.peak = max(self.peak, self.window.peak)
        return [(key, [f.pixels for f in clip]) for key, clip in ready]


def _batches(
    inbox: queue.Queue, batch_size: int, clips: _Clips, to_item: Callable[[Any], _Item] | None = None
) -> Iterator[list[tuple[_Item, list[np.ndarray]]]]:
    """Group ready clips into batches; a batch never waits for frames that are not decoded yet.
    ``to_item`` turns what the reader queued into an `_Item` (a live reader queues `LiveFrame`s)."""
    ready: list[tuple[_Item, list[np.ndarray]]] = []
    while True:
        item = inbox.get()
        if isinstance(item, BaseException):
            raise item
        if item is END:
            break
        ready += clips.push(to_item(item) if to_item is not None else item)
        while len(ready) >= batch_size:
            yield ready[:batch_size]
            ready = ready[batch_size:]
        if ready and inbox.empty():
            yield ready
            ready = []
    if ready:
        yield ready


def predict(
    detector: FrameDetector,
    source: str | Path | DatasetIndex,
    out_dir: str | Path,
    batch_size: int = 8,
    save_video: bool | None = None,
    save_images: bool = False,
    fps: float | None = None,
    format: str = "auto",
    progress: bool = True,
    skip_invalid: bool = False,
    input_format: str | None = None,
    max_frames: int | None = None,
    stream_buffer: bool = False,
) -> PredictResult:
    """Run ``detector`` (an image model, or a teacher on clips) over ``source`` and write the outputs
    described in the module docstring.

    ``save_video`` None: an annotated mp4 only when the source is a video file or live. ``fps``
    overrides the frame rate of the written videos (default: the source's, else 25; a live recording
    keeps the source's timestamps). ``skip_invalid``: records of ``source`` that cannot be read are
    left out (and listed in the log) instead of stopping. A live source (``deploy.live.live_source``:
    a stream URL, or any ``source`` with ``input_format``) is read for ``max_frames`` frames (None:
    until it ends or Ctrl-C / SIGTERM); ``stream_buffer`` processes every frame even when the model
    falls behind the source, instead of the newest.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    sampling = getattr(detector, "clip_sampling", None)
    live = None if isinstance(source, DatasetIndex) else live_source(source, input_format)
    stop = threading.Event()
    live_reader: LiveReader | None = None
    to_item: Callable[[Any], _Item] | None = None
    if live is not None:
        if sampling is not None:
            raise teacher_refused(source)
        stream = LiveStream(live)
        live_reader = LiveReader(stream, capacity=4 * batch_size if stream_buffer else batch_size,
                                 keep_all=stream_buffer, max_frames=max_frames)
        total, is_video, inbox, reader = max_frames, True, live_reader.queue, live_reader
        to_item = _live_item(VideoRecord(video_id=1, name=live.name), live.url)
        source_fps = stream.fps
    else:
        if max_frames is not None or stream_buffer:
            raise ConfigError(f"{source}: --max-frames and --stream-buffer are for live sources (a stream URL, or a "
                              "device with --input-format); a file or dataset is read whole")
        index = open_source(source, format, skip_invalid)
        total = sum(len(v.frames) for v in index.videos)
        is_video = any(f.container_index is not None for v in index.videos for f in v.frames[:1])
        inbox = queue.Queue(maxsize=4 * batch_size)
        reader = threading.Thread(target=_read, args=(index, inbox, stop), name="v2idetr-reader", daemon=True)
        source_fps = None
    out = output_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)

    def video_fps(video: VideoRecord) -> float:
        return float(fps or video.extra.get("fps") or source_fps or DEFAULT_FPS)

    writer = _Writer(out, video_fps, is_video if save_video is None else save_video, save_images,
                     timestamps=live is not None and not fps)
    clips = _Clips(sampling or _IMAGE)
    records: list[dict[str, Any]] = []
    processed = 0
    start = time.perf_counter()
    reader.start()
    failed = True
    try:
        with (stop_on_signals(live_reader.stop_requested) if live_reader is not None else contextlib.nullcontext(),
              tqdm(total=total, desc="predict", unit="frame", disable=not progress, dynamic_ncols=True) as bar):
            for batch in _batches(inbox, batch_size, clips, to_item):
                if sampling is None:
                    dets = detector.predict_frames([pixels[0] for _, pixels in batch])
                else:
                    dets = detector.predict_clips([pixels for _, pixels in batch])  # type: ignore[attr-defined]
                for (item, _), det in zip(batch, dets, strict=True):
                    for rec in det.to_coco(item.frame.image_id):
                        records.append({**rec, "video": item.video.name, "frame_id": item.frame.frame_id})
                    writer.put(item, det)
                processed += len(batch)
                bar.update(len(batch))
                if live_reader is not None and live_reader.dropped:
                    bar.set_postfix(dropped=live_reader.dropped)
        failed = False
    finally:
        if live_reader is not None:
            live_reader.stop()
        else:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                try:
                    inbox.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.1)
        writer.finish(failed)
    seconds = time.perf_counter() - start
    det_path = atomic_write_json(out / "detections.json", records)
    result = PredictResult(out, det_path, writer.videos, writer.images, processed, len(records), seconds,
                           getattr(detector, "model_description", "image model"), clips.peak,
                           live_reader.dropped if live_reader is not None else 0)
    log.info("%s: %d frames in %.1f s (%.1f frames/s end to end), %d detections",
             result.model, processed, seconds, result.fps, len(records))
    if result.dropped:
        log.warning("%s: %d of %d decoded frames dropped: the model was slower than the source (a smaller model, "
                    "a GPU or --stream-buffer, which keeps every frame and falls behind)", source, result.dropped,
                    live_reader.decoded if live_reader is not None else 0)
    return result
