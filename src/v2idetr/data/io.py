"""Reading one frame, from an image file or from inside a video container, as ``H x W x 3`` uint8 RGB.

Video frames are addressed by ``FrameRecord.container_index``, the number of the frame in decode
order counted from 0. Training reads frames in random order while inference reads them in order,
so each process keeps a few containers open (a small LRU cache): a request for the frame after
(or a few frames after) the last one decodes forward, anything else seeks to the nearest key frame
before it and decodes from there.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from v2idetr.data.index import FrameRecord
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)

MAX_OPEN_CONTAINERS = 4
# Decoding up to this many frames forward is cheaper than a seek, which restarts at a key frame.
FORWARD_DECODE_LIMIT = 16


class FrameReadError(DatasetError):
    """A frame's file is missing, unreadable, truncated or corrupt."""

    def __init__(self, frame: FrameRecord, message: str):
        self.frame = frame
        where = f"image_id {frame.image_id}"
        if frame.container_index is not None:
            where += f", frame index {frame.container_index}"
        super().__init__(Problem(str(frame.path), where, "path", message), header="cannot read frame")


def read_frame(frame: FrameRecord) -> np.ndarray:
    """The frame's pixels: ``[H, W, 3]`` uint8 RGB (grey is replicated, alpha is dropped).

    Raises ``FrameReadError`` (a ``DatasetError``) naming the file and the frame when it cannot be read.
    """
    if frame.container_index is None:
        return _read_image(frame)
    return _read_video_frame(frame)


def _read_image(frame: FrameRecord) -> np.ndarray:
    path = Path(frame.path)
    if not path.is_file():
        raise FrameReadError(frame, "file not found")
    try:
        with Image.open(path) as img:
            img.load()  # decode now so that truncated or corrupt data fails here, with the file named
            return _to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FrameReadError(frame, f"not a readable image ({type(exc).__name__}: {exc})") from exc


def _to_rgb(img: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` uint8; 16-bit grey keeps its top 8 bits instead of being clipped at 255."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


@dataclass
class _OpenVideo:
    """An open container and where its decoder stands."""

    container: Any
    stream: Any
    frames: Any = None  # the decode iterator
    last_index: int = -1
    last_image: np.ndarray | None = None
    pending: Any = None  # the first frame decoded after a seek, not yet converted
    lock: threading.Lock = field(default_factory=threading.Lock)


_cache: OrderedDict[str, _OpenVideo] = OrderedDict()
_cache_pid = os.getpid()
_cache_lock = threading.Lock()


def clear_video_cache() -> None:
    """Close every container this process holds open."""
    global _cache_pid
    with _cache_lock:
        if _cache_pid == os.getpid():
            for video in _cache.values():
                _close(video)
        _cache.clear()
        _cache_pid = os.getpid()


def _close(video: _OpenVideo) -> None:
    try:
        video.container.close()
    except av.error.FFmpegError:  # closing a broken container must not hide the real error
        pass


def _open(frame: FrameRecord) -> _OpenVideo:
    path = Path(frame.path)
    if not path.is_file():
        raise FrameReadError(frame, "video file not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise FrameReadError(frame, f"not a readable video ({type(exc).__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise FrameReadError(frame, "the file has no video stream")
    return _OpenVideo(container=container, stream=container.streams.video[0])


def _get_open(frame: FrameRecord) -> _OpenVideo:
    """The cached container for ``frame.path``, opened (and the least recently used closed) if needed."""
    global _cache_pid
    key = str(frame.path)
    with _cache_lock:
        if _cache_pid != os.getpid():
            # A forked DataLoader worker must not share the parent's decoder state.
            _cache.clear()
            _cache_pid = os.getpid()
        video = _cache.get(key)
        if video is not None:
            _cache.move_to_end(key)
            return video
    video = _open(frame)
    with _cache_lock:
        _cache[key] = video
        while len(_cache) > MAX_OPEN_CONTAINERS:
            _close(_cache.popitem(last=False)[1])
    return video


def _forget(frame: FrameRecord) -> None:
    with _cache_lock:
        video = _cache.pop(str(frame.path), None)
    if video is not None:
        _close(video)


def _read_video_frame(frame: FrameRecord) -> np.ndarray:
    index = int(frame.container_index)  # type: ignore[arg-type]
    if index < 0:
        raise FrameReadError(frame, f"container_index must be >= 0, got {index}")
    video = _get_open(frame)
    try:
        with video.lock:
            return _decode_at(video, frame, index).copy()
    except FrameReadError:
        _forget(frame)
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        _forget(frame)
        raise FrameReadError(frame, f"cannot decode ({type(exc).__name__}: {exc})") from exc


def _pts_to_index(video: _OpenVideo, pts: int | None) -> int | None:
    """Frame number of a presentation time stamp, for constant-frame-rate streams; None if unknown."""
    stream = video.stream
    if pts is None or not stream.average_rate or not stream.time_base:
        return None
    start = stream.start_time or 0
    return int(round(float((pts - start) * stream.time_base * stream.average_rate)))


def _restart(video: _OpenVideo) -> None:
    video.container.seek(0, backward=True, any_frame=False, stream=video.stream)
    video.frames = video.container.decode(video.stream)
    video.last_index, video.last_image, video.pending = -1, None, None


def _seek(video: _OpenVideo, index: int) -> None:
    """Position the decoder so that the next frame decoded is at or before ``index``."""
    stream = video.stream
    if index == 0 or not stream.average_rate or not stream.time_base:
        _restart(video)
        return
    start = stream.start_time or 0
    target = start + int(index / (stream.average_rate * stream.time_base))
    video.container.seek(target, backward=True, any_frame=False, stream=stream)
    video.frames = video.container.decode(stream)
    first = next(video.frames, None)
    first_index = _pts_to_index(video, None if first is None else first.pts)
    if first is None or first_index is None or first_index > index:
        _restart(video)  # the seek overshot or time stamps are missing: count from the start
        return
    video.last_index, video.last_image, video.pending = first_index, None, first


def _decode_at(video: _OpenVideo, frame: FrameRecord, index: int) -> np.ndarray:
    if index == video.last_index and video.last_image is not None:
        return video.last_image
    if video.frames is None or not (video.last_index < index <= video.last_index + FORWARD_DECODE_LIMIT):
        _seek(video, index)
    pending, video.pending = video.pending, None
    if pending is not None:
        if video.last_index == index:
            video.last_image = pending.to_ndarray(format="rgb24")
            return video.last_image
    while video.last_index < index:
        decoded = next(video.frames, None)
        if decoded is None:
            video.frames = None
            raise FrameReadError(
                frame, f"the video ends after {video.last_index + 1} frames, frame index {index} requested"
            )
        video.last_index += 1
        if video.last_index == index:
            video.last_image = decoded.to_ndarray(format="rgb24")
    assert video.last_image is not None
    return video.last_image
