"""One entry point that reads any supported dataset layout into a ``DatasetIndex``.

``format="auto"`` recognises:

- a ``.json`` file                                     -> COCO-VID
- a folder with ``rawframes/``                         -> BUV
- a folder with ``annotation_txt/`` or ``annotations/*.txt`` -> SUN (original layout)
- a folder with ``Frame/`` and ``GT/``                 -> SUN-SEG
- a folder of images                                   -> one unlabelled video
- a ``.mp4``/``.avi``/``.mov``/``.mkv`` file           -> one unlabelled video
- a folder of frame folders and/or video files         -> unlabelled videos (an archive)
"""

from __future__ import annotations

import logging
from pathlib import Path

from v2idetr.data.formats.buv import scan_buv
from v2idetr.data.formats.cocovid import scan_coco_vid
from v2idetr.data.formats.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, scan_image_folder, scan_video_file
from v2idetr.data.formats.scan import ProblemLog, Scan, name_matches
from v2idetr.data.formats.sun import scan_sun
from v2idetr.data.formats.sun_seg import scan_sun_seg
from v2idetr.data.formats.videos import holds_videos, scan_video_tree
from v2idetr.data.index import DatasetIndex
from v2idetr.errors import ConfigError, DatasetError, Problem

log = logging.getLogger(__name__)

FORMATS = ("auto", "coco-vid", "buv", "sun", "sun-seg", "images", "video", "videos")

LAYOUTS = (
    "a COCO-VID .json file; "
    "a BUV folder (rawframes/ + imagenet_vid_train_15frames.json / imagenet_vid_val.json); "
    "a SUN folder (<case>/*.jpg + annotation_txt/<case>.txt); "
    "a SUN-SEG folder (Frame/<case>/ + GT/<case>/ [+ bbox_annotation.json]); "
    f"a folder of images ({', '.join(IMAGE_EXTENSIONS)}); "
    f"a video file ({', '.join(VIDEO_EXTENSIONS)}); "
    "a folder of videos (per-video frame folders and/or video files, at any depth)"
)


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (one of ``FORMATS`` but ``auto``), or ``DatasetError`` listing the layouts."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(Problem(str(path), "", "", "no such file or folder"), header="cannot read dataset")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "coco-vid"
        if suffix in VIDEO_EXTENSIONS:
            return "video"
    else:
        found = []
        if (path / "rawframes").is_dir():
            found.append("buv")
        if (path / "annotation_txt").is_dir() or any((path / "annotations").glob("*.txt")):
            found.append("sun")
        if (path / "Frame").is_dir() and (path / "GT").is_dir():
            found.append("sun-seg")
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DatasetError(
                Problem(
                    str(path), "", "", f"ambiguous layout: looks like {' and '.join(found)}; give the format"
                ),
                header="cannot tell the dataset format",
            )
        if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
            return "images"
        if holds_videos(path):
            return "videos"
    raise DatasetError(
        Problem(str(path), "", "", f"unknown dataset layout; expected one of: {LAYOUTS}"),
        header="cannot tell the dataset format",
    )


def read_name_list(path: str | Path) -> list[str]:
    """Video names from a text file: one per line (``exclude <name>`` also accepted), ``#`` comments."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(Problem(str(path), "", "", f"cannot read the exclusion list ({exc})")) from exc
    names = []
    for n, raw in enumerate(lines, start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0].lower() == "exclude" and len(words) == 2:
            words = words[1:]
        if len(words) != 1:
            raise DatasetError(
                Problem(
                    str(path), f"line {n}", "video", f"expected one video name per line, got {raw.strip()!r}"
                ),
                header="invalid exclusion list",
            )
        names.append(words[0])
    return names


def scan_index(
    path: str | Path,
    format: str = "auto",
    images_root: str | Path | None = None,
    check_files: bool = True,
    exclude: str | Path | None = None,
    split: str = "train",
    progress: bool = False,
) -> Scan:
    """Check a dataset without raising for its problems: the index of its valid records and every problem.

    ``progress``: a progress bar over the videos of a folder of videos (an archive). Raises ``DatasetError`` only when the format cannot be told and ``ConfigError`` for a bad ``format``.
    """
    if format not in FORMATS:
        raise ConfigError(f"dataset format {format!r}: expected one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "coco-vid":
        names = read_name_list(exclude) if exclude is not None else None
        return scan_coco_vid(path, images_root, check_files, names)
    if fmt == "buv":
        # A BUV exclusion list may also relabel videos: it is read as an errata file.
        return scan_buv(path, split=split, errata=exclude, check_files=check_files)
    if fmt == "sun":
        scan = scan_sun(path, check_files)
    elif fmt == "sun-seg":
        scan = scan_sun_seg(path, check_files)
    elif fmt == "images":
        scan = scan_image_folder(path)
    elif fmt == "videos":
        scan = scan_video_tree(path, progress=progress)
    else:
        scan = scan_video_file(path)
    if exclude is not None and scan.index is not None:
        _exclude(scan.index, read_name_list(exclude), scan.log)
    return scan


def _exclude(index: DatasetIndex, names: list[str], plog: ProblemLog) -> None:
    wanted = set(names)
    before = len(index.videos)
    index.videos = [v for v in index.videos if name_matches(v.name, wanted) is None]
    log.info("%s: excluded %d video(s) by name", plog.file, before - len(index.videos))


def load_index(
    path: str | Path,
    format: str = "auto",
    images_root: str | Path | None = None,
    skip_invalid: bool = False,
    check_files: bool = True,
    exclude: str | Path | None = None,
    split: str = "train",
    progress: bool = False,
) -> DatasetIndex:
    """Read a dataset of any supported layout (module docstring) into a ``DatasetIndex``.

    ``exclude`` is a text file of video names to leave out (for BUV, an errata file, see
    ``v2idetr.data.formats.buv``); ``split`` picks the BUV label file (``train`` or ``test``).
    Raises ``DatasetError`` with every problem unless ``skip_invalid``.
    """
    return scan_index(path, format, images_root, check_files, exclude, split, progress).finish(skip_invalid)
