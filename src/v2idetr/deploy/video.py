"""Annotated output: boxes drawn on frames, and an mp4 writer (``av``) that is atomic.

The writer encodes into a temporary file next to the target and renames it on ``close``, so an
interrupted run never leaves a truncated mp4 under the final name.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from v2idetr.atomic import fsync_dir, temp_beside

if TYPE_CHECKING:
    from v2idetr.deploy.runtime import Detections

# One colour per class index (cycled), readable on grey ultrasound and on pink colonoscopy frames.
PALETTE = ((0, 230, 0), (255, 60, 60), (0, 200, 255), (255, 200, 0), (200, 80, 255), (255, 140, 0))
GROUND_TRUTH_COLOUR = (255, 255, 255)


def draw_detections(frame: np.ndarray, det: Detections, line_width: int = 2) -> np.ndarray:
    """A copy of ``frame`` (``[H, W, 3]`` uint8 RGB) with each box, its class name and score drawn."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for (x1, y1, x2, y2), score, label in zip(det.boxes, det.scores, det.labels, strict=True):
        colour = PALETTE[int(label) % len(PALETTE)]
        draw.rectangle([float(x1), float(y1), float(x2), float(y2)], outline=colour, width=line_width)
        name = det.class_names[int(label)] if det.class_names else str(int(label))
        text = f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = max(0.0, float(y1) - (bottom - top) - 2)
        draw.rectangle([float(x1), ty, float(x1) + right - left + 2, ty + bottom - top + 2], fill=colour)
        draw.text((float(x1) + 1, ty), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def draw_boxes(frame: np.ndarray, boxes: np.ndarray, colour: tuple[int, int, int], line_width: int = 1) -> np.ndarray:
    """A copy of ``frame`` with plain ``x1, y1, x2, y2`` outlines (e.g. ground truth)."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=float).reshape(-1, 4):
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line_width)
    return np.asarray(image)


_MILLISECOND = Fraction(1, 1000)


def _codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class VideoWriter:
    """Write RGB frames to an mp4 at a given frame rate; the file appears under its name on ``close``.

    Frames must all have the size of the first; odd sizes are padded by one black row/column
    (yuv420p needs even sizes), so boxes drawn in frame pixels stay where they were. With
    ``timestamps`` each frame is written at the time given with it (``write(frame, time_s)``, a
    variable frame rate): a live recording whose late frames were dropped still plays in real time.
    """

    def __init__(self, path: str | Path, fps: float | Fraction = 25.0, timestamps: bool = False):
        self.path = Path(path)
        self.timestamps = timestamps
        self._first_time: float | None = None
        self._last_pts = -1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_beside(self.path, suffix=".tmp.mp4")
        self._fps = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self._container = av.open(str(self._tmp), "w", format="mp4")
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open_stream(self, h: int, w: int) -> None:
        codec = _codec()
        stream = self._container.add_stream(codec, rate=self._fps)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"} if codec == "libx264" else {"qscale": "3"}
        if self.timestamps:
            stream.codec_context.time_base = _MILLISECOND
        self._stream, self._size = stream, (h, w)

    def _pts(self, time_s: float | None) -> int:
        """Milliseconds since the first frame, strictly increasing (a repeated time moves on by 1 ms)."""
        if time_s is None:
            raise ValueError(f"{self.path}: a video written with timestamps needs each frame's time")
        if self._first_time is None:
            self._first_time = time_s
        self._last_pts = max(round((time_s - self._first_time) * 1000), self._last_pts + 1)
        return self._last_pts

    def write(self, frame: np.ndarray, time_s: float | None = None) -> None:
        """Append ``frame`` (``[H, W, 3]`` uint8 RGB); ``time_s``: its time, with ``timestamps`` only."""
        h, w = frame.shape[:2]
        if self._stream is None:
            self._open_stream(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"{self.path}: frame {self.frames} is {w}x{h}, the video is {self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if self.timestamps:
            picture.pts, picture.time_base = self._pts(time_s), _MILLISECOND
        for packet in self._stream.encode(picture):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the file into place."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (on errors): the target name is never touched."""
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError, ValueError):
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
