"""Check a dataset and report every problem at once, instead of stopping at the first.

The structural checks are the readers' own (``v2idetr.data.load.scan_index``), so validation and
loading cannot disagree; validation adds what is too slow to do on every load: decoding each frame
file (corrupt or truncated files) and comparing its size with the annotation's width and height.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import av
from PIL import Image
from tqdm import tqdm

from v2idetr.data.formats.media import IMAGE_ERRORS
from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.data.load import scan_index
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)


def _record(frame: FrameRecord) -> str:
    return f"image id={frame.image_id} ({frame.file_name or frame.path})"


def check_image_frame(frame: FrameRecord, source: str) -> list[Problem]:
    """Decode one image file; a problem if it is unreadable or its size differs from the record's."""
    try:
        with Image.open(frame.path) as img:
            img.verify()  # checks the container (PNG CRCs) without decoding
        with Image.open(frame.path) as img:
            img.load()  # a full decode finds truncated data that verify cannot
            size = img.size
    except IMAGE_ERRORS as exc:
        message = f"frame file {frame.path} cannot be decoded ({type(exc).__name__}: {exc})"
        return [Problem(source, _record(frame), "file_name", message)]
    if size != (frame.width, frame.height):
        message = (
            f"frame file {frame.path} is {size[0]}x{size[1]} (width x height) "
            f"but the record says {frame.width}x{frame.height}"
        )
        return [Problem(source, _record(frame), "width/height", message)]
    return []


def check_video_frames(path: Path, frames: list[FrameRecord], source: str) -> list[Problem]:
    """Decode a video container once; problems for undecodable data, missing frames or a size mismatch."""
    problems: list[Problem] = []
    wanted = {f.container_index: f for f in frames}
    decoded = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                record = wanted.get(decoded)
                if record is not None and (frame.width, frame.height) != (record.width, record.height):
                    message = (
                        f"decoded frame is {frame.width}x{frame.height} (width x height) "
                        f"but the record says {record.width}x{record.height}"
                    )
                    problems.append(Problem(source, _record(record), "width/height", message))
                decoded += 1
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        message = f"video {path} cannot be decoded after {decoded} frame(s) ({type(exc).__name__}: {exc})"
        problems.append(Problem(source, f"video {path.name}", "path", message))
        return problems
    missing = sorted(i for i in wanted if i is not None and i >= decoded)
    if missing:
        message = (
            f"video {path} decodes to {decoded} frame(s) but frames up to index {missing[-1]} are indexed"
        )
        problems.append(Problem(source, f"video {path.name}", "container_index", message))
    return problems


def check_frames(index: DatasetIndex, progress: bool = False) -> list[Problem]:
    """Decode every frame of ``index`` (images one by one, each video container once)."""
    problems: list[Problem] = []
    containers: dict[Path, list[FrameRecord]] = defaultdict(list)
    images: list[FrameRecord] = []
    for frame in index.frames():
        if frame.container_index is None:
            images.append(frame)
        else:
            containers[Path(frame.path)].append(frame)
    for frame in tqdm(images, desc="decode frames", unit="frame", disable=not progress):
        problems.extend(check_image_frame(frame, index.source))
    for path, frames in containers.items():
        problems.extend(check_video_frames(path, frames, index.source))
    return problems


def validate(
    path: str | Path,
    format: str = "auto",
    images_root: str | Path | None = None,
    decode_images: bool = True,
    split: str = "train",
    progress: bool = False,
) -> list[Problem]:
    """Every problem of the dataset at ``path`` (an empty list when it is clean).

    Reports everything the readers detect and, with ``decode_images``, frames that cannot be decoded
    or whose size differs from the annotation's width and height.
    """
    try:
        scan = scan_index(path, format, images_root, check_files=True, split=split)
    except DatasetError as exc:  # the layout itself is not recognised
        return list(exc.problems)
    problems = list(scan.log.problems)
    if scan.index is None or scan.log.fatal:
        return problems
    if scan.index.num_frames == 0:
        problems.append(Problem(scan.log.file, "", "images", "no frames to use (every frame is invalid)"))
    if decode_images:
        problems.extend(check_frames(scan.index, progress=progress))
    log.info("%s: %d problem(s)", path, len(problems))
    return problems
