"""Live sources for `v2idetr predict`: a network stream or an FFmpeg input device, decoded as it arrives.

A live source is named by a URL (``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``,
``srt://``, or ``file://`` to replay a recording as if live) or by an FFmpeg input format
(``--input-format``: ``v4l2`` for a capture card or camera on Linux, ``avfoundation`` on macOS,
``dshow`` on Windows, ``lavfi`` for FFmpeg's test sources) where the installed FFmpeg has it. Unlike a
file it has no length and no end until the sender stops, so `predict` reads it frame by frame, for
``max_frames`` frames or until Ctrl-C / SIGTERM, and then finishes its outputs as for a file.

Only image models run live (the deployed student): a video teacher's clips need frames after the
key frame, which a live source has not sent yet.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import av
import numpy as np

from v2idetr.errors import ConfigError, DatasetError, Problem

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "file")


@dataclass(frozen=True)
class LiveSpec:
    """What FFmpeg opens: ``url`` (a URL, a device, a filter graph) in ``input_format`` (None: guessed)."""

    url: str
    input_format: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A name for the outputs (``<name>.mp4``): the URL's last path part, or the device."""
        parsed = urlparse(self.url)
        tail = Path(parsed.path).stem if parsed.scheme else Path(self.url).name
        return tail or parsed.hostname or self.input_format or "live"


def live_source(source: object, input_format: str | None = None) -> LiveSpec | None:
    """The live source ``source`` names (a stream URL, or anything with ``input_format``), else None."""
    text = str(source)
    if input_format:
        return LiveSpec(text, input_format)
    if urlparse(text).scheme.lower() in STREAM_SCHEMES:
        options = {"rtsp_transport": "tcp"} if text.lower().startswith(("rtsp://", "rtsps://")) else {}
        return LiveSpec(text, None, options)
    return None


class LiveStream:
    """An open live source; `frames` yields ``(position, time_s, [H, W, 3] uint8 RGB)`` as they are decoded.

    ``timeout_s`` bounds opening and each read of a network source, so a sender that goes silent ends
    the run instead of hanging it.
    """

    def __init__(self, spec: LiveSpec, timeout_s: float = 10.0):
        self.spec, self.timeout_s = spec, timeout_s
        if spec.input_format and spec.input_format not in av.formats_available:
            raise ConfigError(
                f"--input-format {spec.input_format!r}: the FFmpeg inside this PyAV build cannot read it. "
                "Stream the device over the network instead (for example `ffmpeg -f v4l2 -i /dev/video0 -f "
                "mpegts udp://127.0.0.1:5000`, then predict udp://127.0.0.1:5000), or install PyAV built "
                "against a system FFmpeg that has it"
            )
        try:
            self.container = av.open(spec.url, format=spec.input_format, options=dict(spec.options),
                                      timeout=timeout_s)
        except (av.error.FFmpegError, OSError) as exc:
            raise DatasetError(Problem(spec.url, "live source", "open", f"FFmpeg cannot open it: {self._why(exc)}"),
                               header="cannot read the live source") from exc
        if not self.container.streams.video:
            self.container.close()
            raise DatasetError(Problem(spec.url, "live source", "streams", "has no video stream"),
                               header="cannot read the live source")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"

    def _why(self, exc: Exception) -> str:
        """FFmpeg's reason, or for its timeout ("Immediate exit requested") what that means here."""
        if isinstance(exc, av.error.ExitError):
            return (f"nothing arrived within {self.timeout_s:g} s; is the sender running and sending to this "
                    "address (for udp://, start predict first, then the sender)?")
        return str(exc)

    @property
    def fps(self) -> float | None:
        """The frame rate the source announces (None when it does not)."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else None

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """A source that fails after its first frame (the network drops, the sender stops) ends the
        stream with a warning, so what was processed until then is kept; one that never sends a
        frame is an error."""
        position, start = 0, None
        decoded = self.container.decode(self.stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as exc:
                if position == 0:
                    raise DatasetError(Problem(self.spec.url, "live source", "read",
                                               f"no frame could be read: {self._why(exc)}"),
                                       header="cannot read the live source") from exc
                log.warning("%s: the live source stopped after %d frames (%s); finishing the outputs",
                            self.spec.url, position, self._why(exc))
                return
            time_s = frame.time if frame.time is not None else position / (self.fps or 25.0)
            start = time_s if start is None else start
            yield position, time_s - start, frame.to_ndarray(format="rgb24")
            position += 1

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self.container.close()


@dataclass
class LiveFrame:
    """One decoded frame of a live source: its position (from 0), time since the first frame, pixels."""

    position: int
    time_s: float
    pixels: np.ndarray


END = object()  # what a `LiveReader` queues after its last frame


def teacher_refused(source: object) -> ConfigError:
    """The error for a video teacher on a live source (predict and `Detector.stream` alike)."""
    return ConfigError(f"{source}: a video teacher needs the frames after each key frame, which a live source has "
                       "not sent yet; run the student (an image model) live, or the teacher on a recording")


class LiveReader:
    """A thread that decodes ``stream`` into ``queue`` (`LiveFrame`s, then `END`; an error travels as itself).

    Real time unless ``keep_all``: the queue holds at most ``capacity`` frames and, when the consumer
    has fallen behind, the oldest is dropped for the newest (``dropped`` counts them), so the consumer
    always gets the frames the source sent last. It stops after ``max_frames`` frames, when the source
    ends, or at `stop` (at the next frame; a stalled network source at its read timeout).
    """

    def __init__(self, stream: LiveStream, capacity: int = 1, keep_all: bool = False, max_frames: int | None = None):
        self.stream, self.keep_all, self.max_frames = stream, keep_all, max_frames
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.decoded = 0
        self.dropped = 0
        self.stop_requested = threading.Event()  # set by stop(), or by stop_on_signals
        self._thread = threading.Thread(target=self._run, name="v2idetr-live-reader", daemon=True)

    def start(self) -> LiveReader:
        self._thread.start()
        return self

    def _put_newest(self, frame: LiveFrame) -> None:
        while True:
            try:
                self.queue.put_nowait(frame)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()
                    self.dropped += 1

    def _run(self) -> None:
        try:
            for position, time_s, pixels in self.stream.frames():
                if self.stop_requested.is_set():
                    break
                self.decoded += 1
                frame = LiveFrame(position, time_s, pixels)
                if self.keep_all:
                    self.queue.put(frame)
                else:
                    self._put_newest(frame)
                if self.max_frames is not None and self.decoded >= self.max_frames:
                    break
        except BaseException as exc:  # handed to the consumer, which raises it
            self.queue.put(exc)
            return
        finally:
            self.stream.close()
        self.queue.put(END)

    def stop(self, wait_s: float = 30.0) -> None:
        """Ask the thread to end and wait for it (at most ``wait_s``: it may sit in a read until its
        timeout; it is a daemon, so it never keeps the process alive)."""
        self.stop_requested.set()
        deadline = time.monotonic() + wait_s
        while self._thread.is_alive() and time.monotonic() < deadline:  # unblock a put on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.1)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM end a live run normally (``stop`` is set, the outputs are finished); a second
    one interrupts at once."""

    def handle(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log.warning("%s received: finishing the outputs of the frames processed so far", signal.Signals(signum).name)

    old: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no handler, the caller stops it
            old[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
