"""A folder of videos nobody labelled: per-video frame folders and video files, at any depth.

The layout of a recorded-procedure archive: every folder that directly holds images is one video
(its frames in natural name order), and every video file (mp4, avi, mov, mkv) is one video, decoded
on demand (``v2idetr.data.io``: never every frame in memory). Video names are paths relative to the
root; every frame is unlabelled. One unreadable video is a problem of its own, dropped with
``skip_invalid``; the others are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from v2idetr.data.formats.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    natural_key,
    scan_image_folder,
    scan_video_file,
)
from v2idetr.data.formats.scan import ProblemLog, Scan
from v2idetr.data.index import DatasetIndex, VideoRecord


def _walk(root: Path) -> Iterator[Path]:
    """The videos under ``root``: folders with images in them, and video files (hidden folders skipped)."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(folder)
        if any(Path(f).suffix.lower() in IMAGE_EXTENSIONS for f in files):
            yield here
        yield from (here / f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS)


def video_sources(root: str | Path) -> list[Path]:
    """Every video under ``root``: folders that directly hold images, and video files, in natural
    order of their paths (``case2`` before ``case10``)."""
    root = Path(root)
    return sorted(_walk(root), key=lambda p: natural_key(p.relative_to(root).as_posix()))


def holds_videos(root: str | Path) -> bool:
    """Whether ``root`` holds a frame folder or a video file anywhere below it (stops at the first)."""
    return next(_walk(Path(root)), None) is not None


def scan_video_tree(path: str | Path, progress: bool = False) -> Scan:
    """Index every video under the folder ``path`` (module docstring); ids 1.. in path order."""
    root = Path(path)
    plog = ProblemLog(str(root))
    if not root.is_dir():
        plog.add("", "", "not a folder", fatal=True)
        return Scan(None, plog)
    sources = video_sources(root)
    if not sources:
        plog.add("", "", f"no frame folders ({', '.join(IMAGE_EXTENSIONS)}) or video files "
                 f"({', '.join(VIDEO_EXTENSIONS)}) under the folder", fatal=True)
        return Scan(None, plog)
    videos: list[VideoRecord] = []
    image_id = 1
    for source in tqdm(sources, desc=f"scan {root.name}", unit="video", disable=not progress):
        scan = scan_image_folder(source) if source.is_dir() else scan_video_file(source)
        for problem, dropped in zip(scan.log.problems, scan.log.dropped, strict=True):
            plog.problems.append(problem)
            plog.dropped.append(dropped or "video")
        if scan.index is None or scan.log.fatal:
            continue
        name = source.relative_to(root).as_posix() if source != root else root.name
        video_id = len(videos) + 1
        frames = []
        for frame in scan.index.videos[0].frames:
            file_name = Path(frame.path).relative_to(root).as_posix()
            frames.append(replace(frame, image_id=image_id, video_id=video_id, file_name=file_name))
            image_id += 1
        videos.append(VideoRecord(video_id, name, frames, dict(scan.index.videos[0].extra)))
    return Scan(DatasetIndex(videos=videos, class_names=[], category_ids=[], source=str(root)), plog)
