"""Media without labels, for inference: a folder of images or a video file, each one video.

Both give an index with no classes (``class_names == []``) and every frame unlabelled
(``FrameRecord.labelled`` False: nobody looked at them, so they are not negatives and evaluation
has nothing to score on them; ``v2idetr predict`` ignores labels anyway). A video file
gives one ``FrameRecord`` per frame, all with ``path`` = the file and ``container_index`` = the
frame's number in decode order (``v2idetr.data.io`` decodes them on demand).
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, UnidentifiedImageError

from v2idetr.data.formats.scan import ProblemLog, Scan
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
# Errors PIL raises for files that are not (complete) images.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders ``frame2.jpg`` before ``frame10.jpg`` (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in natural order of their names."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding the pixels."""
    with Image.open(path) as img:
        return img.size


def logged_image_size(file: Path, plog: ProblemLog) -> tuple[int, int] | None:
    """``image_size``, or ``None`` with the unreadable frame recorded (and dropped) in ``plog``."""
    try:
        return image_size(file)
    except IMAGE_ERRORS as exc:
        plog.add(
            file.name,
            "file_name",
            f"not a readable image ({type(exc).__name__}: {exc})",
            dropped="frame",
            file=file,
        )
        return None


def scan_image_folder(path: str | Path) -> Scan:
    """Check an image folder and index it as one video (frame ids 0.. in natural name order)."""
    folder = Path(path)
    plog = ProblemLog(str(folder))
    if not folder.is_dir():
        plog.add("", "", "not a folder", fatal=True)
        return Scan(None, plog)
    files = image_files(folder)
    if not files:
        plog.add("", "", f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder", fatal=True)
        return Scan(None, plog)
    video = VideoRecord(video_id=1, name=folder.resolve().name)
    for file in files:
        size = logged_image_size(file, plog)
        if size is None:
            continue
        width, height = size
        n = len(video.frames)
        video.frames.append(
            FrameRecord(
                image_id=n + 1,
                video_id=1,
                frame_id=n,
                path=file,
                width=width,
                height=height,
                file_name=file.name,
                labelled=False,
            )
        )
    return Scan(DatasetIndex(videos=[video], class_names=[], category_ids=[], source=str(folder)), plog)


def read_image_folder(path: str | Path, skip_invalid: bool = False) -> DatasetIndex:
    """A folder of images (png, jpg, jpeg, bmp, tif) as one unlabelled video, sorted naturally by name."""
    return scan_image_folder(path).finish(skip_invalid)


def _count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Frames of the stream: the container's count when it has one, else the packets (no decoding)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def scan_video_file(path: str | Path) -> Scan:
    """Check a video file and index it as one video: one frame record per frame, sizes and fps from ``av``."""
    path = Path(path)
    plog = ProblemLog(str(path))
    if not path.is_file():
        plog.add("", "", "video file not found", fatal=True)
        return Scan(None, plog)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                plog.add("", "", "the file has no video stream", fatal=True)
                return Scan(None, plog)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            rate: Fraction | None = stream.average_rate or stream.guessed_rate
            count = _count_frames(container, stream)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        plog.add("", "", f"not a readable video ({type(exc).__name__}: {exc})", fatal=True)
        return Scan(None, plog)
    if count == 0 or not width or not height:
        plog.add(
            "", "", f"the video stream has no frames (frames={count}, size={width}x{height})", fatal=True
        )
        return Scan(None, plog)
    fps = float(rate) if rate else None
    video = VideoRecord(video_id=1, name=path.stem, extra={"fps": fps})
    video.frames = [
        FrameRecord(
            image_id=i + 1,
            video_id=1,
            frame_id=i,
            path=path,
            width=int(width),
            height=int(height),
            file_name=path.name,
            container_index=i,
            labelled=False,
        )
        for i in range(count)
    ]
    log.debug("%s: %d frames of %dx%d at %s fps", path, count, width, height, fps)
    return Scan(DatasetIndex(videos=[video], class_names=[], category_ids=[], source=str(path)), plog)


def read_video_file(path: str | Path) -> DatasetIndex:
    """A video file (anything ``av`` opens: mp4, avi, mov, mkv, ...) as one unlabelled video.

    ``VideoRecord.extra["fps"]`` holds the average frame rate (None when the container has none).
    """
    return scan_video_file(path).finish()
