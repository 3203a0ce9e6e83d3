"""SUN Colonoscopy Video Database: the original per-case layout (SUN-SEG's is in `sun_seg`).

Original layout (``read_sun``)::

    root/<case>/*.jpg                  (or root/frames/<case>/*.jpg)
    root/annotation_txt/<case>.txt     (or root/annotations/<case>.txt)

One annotation line per frame: ``<image name> x1,y1,x2,y2,class`` (pixels, corners inclusive of
the convention of the release), several space-separated box groups allowed, a line with only the
image name being a frame without a polyp. Cases without an annotation file (the polyp-free
videos) are all negatives. The class integer is kept as the category id; it is named ``polyp``
when there is one class, ``class<id>`` otherwise. Frames are ordered by the numbers in their
names (natural sort) and ``frame_id`` is that position.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from v2idetr.data.formats.media import image_files, logged_image_size, natural_key
from v2idetr.data.formats.scan import ProblemLog, Scan, as_int, check_box
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord

log = logging.getLogger(__name__)

ANNOTATION_DIRS = ("annotation_txt", "annotations")

_Box = tuple[float, float, float, float, int]


def _class_name(cid: int, count: int) -> str:
    return "polyp" if count == 1 else f"class{cid}"


def parse_sun_line(line: str) -> tuple[str, list[_Box], str, str]:
    """Split ``<name> x1,y1,x2,y2,class ...`` into the name and boxes.

    Returns ``(name, boxes, bad_field, message)``; ``bad_field`` is empty when the line is well formed.
    """
    # Some exports put a space after the commas; glue each group back together first.
    text = re.sub(r"\s*,\s*", ",", line.strip())
    words = text.split()
    name, groups = words[0], words[1:]
    boxes: list[_Box] = []
    for g, group in enumerate(groups, start=1):
        parts = group.split(",")
        if len(parts) != 5:
            return (
                name,
                [],
                "box",
                f"box group {g} {group!r}: expected x1,y1,x2,y2,class (5 comma-separated numbers)",
            )
        values: list[float] = []
        for key, part in zip(("x1", "y1", "x2", "y2"), parts[:4], strict=True):
            try:
                values.append(float(part))
            except ValueError:
                return name, [], key, f"box group {g}: {key} {part!r} is not a number"
        cls = as_int(_number(parts[4]))
        if cls is None or cls < 0:
            return name, [], "class", f"box group {g}: class {parts[4]!r} is not a non-negative integer"
        boxes.append((values[0], values[1], values[2], values[3], cls))
    return name, boxes, "", ""


def _number(text: str) -> float | int | None:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def _find_sun_layout(root: Path, plog: ProblemLog) -> tuple[Path, Path] | None:
    ann_dir = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir()), None)
    if ann_dir is None:
        plog.add("", "", f"no annotation folder ({' or '.join(ANNOTATION_DIRS)}) in {root}", fatal=True)
        return None
    frames_root = root / "frames" if (root / "frames").is_dir() else root
    return frames_root, ann_dir


def scan_sun(root: str | Path, check_files: bool = True) -> Scan:
    """Check the SUN per-case layout and index it.

    Frame sizes come from each image header; with ``check_files=False`` only the first frame of a
    case is opened and its size is used for the whole case (fast on the 158k-frame release).
    """
    root = Path(root)
    plog = ProblemLog(str(root))
    if not root.is_dir():
        plog.add("", "", "SUN root folder not found", fatal=True)
        return Scan(None, plog)
    layout = _find_sun_layout(root, plog)
    if layout is None:
        return Scan(None, plog)
    frames_root, ann_dir = layout
    skip = {ann_dir.resolve(), (root / "frames").resolve()}
    cases = {
        d.name: d
        for d in frames_root.iterdir()
        if d.is_dir() and d.resolve() not in skip and d.name not in ANNOTATION_DIRS
    }
    cases = {name: d for name, d in cases.items() if image_files(d)}
    ann_files = {p.stem: p for p in ann_dir.glob("*.txt")}
    for stem in sorted(set(ann_files) - set(cases), key=natural_key):
        plog.add(
            "",
            "case",
            f"annotation file for case {stem!r} but no frame folder {frames_root / stem}",
            dropped="the annotation file",
            file=ann_files[stem],
        )
    if not cases:
        plog.add("", "", f"no case folders with images in {frames_root}", fatal=True)
        return Scan(None, plog)

    videos: list[VideoRecord] = []
    all_boxes: dict[tuple[int, str], list[_Box]] = {}
    image_id = 1
    for video_id, case in enumerate(sorted(cases, key=natural_key), start=1):
        files = image_files(cases[case])
        by_name: dict[str, list[_Box]] = {}
        bad_names: set[str] = set()
        if case in ann_files:
            by_name, bad_names = _read_case_annotations(ann_files[case], {f.name for f in files}, plog)
        video = VideoRecord(video_id=video_id, name=case)
        case_size: tuple[int, int] | None = None
        for file in files:
            if file.name in bad_names:
                continue
            size = logged_image_size(file, plog) if check_files or case_size is None else case_size
            if size is None:
                continue
            case_size = case_size or size
            frame = FrameRecord(
                image_id=image_id,
                video_id=video_id,
                frame_id=len(video.frames),
                path=file,
                width=size[0],
                height=size[1],
                file_name=file.relative_to(frames_root).as_posix(),
            )
            boxes = by_name.get(file.name, [])
            checked: list[_Box] = []
            for x1, y1, x2, y2, cls in boxes:
                box, message = check_box(x1, y1, x2, y2, size[0], size[1])
                if box is None:
                    plog.add(f"image {file.name}", "bbox", message, dropped="frame", file=ann_files[case])
                    break
                checked.append((*box, cls))
            else:
                all_boxes[(video_id, file.name)] = checked
                video.frames.append(frame)
                image_id += 1
        if video.frames:
            videos.append(video)
    class_ids = sorted({b[4] for boxes in all_boxes.values() for b in boxes})
    label_of = {cid: i for i, cid in enumerate(class_ids)}
    for video in videos:
        for frame in video.frames:
            boxes = all_boxes[(video.video_id, frame.path.name)]
            if boxes:
                frame.boxes = np.asarray([b[:4] for b in boxes], dtype=np.float32)
                frame.labels = np.asarray([label_of[b[4]] for b in boxes], dtype=np.int64)
    index = DatasetIndex(
        videos=videos,
        class_names=[_class_name(c, len(class_ids)) for c in class_ids],
        category_ids=class_ids,
        source=str(root),
    )
    return Scan(index, plog)


def _read_case_annotations(
    path: Path, frame_names: set[str], plog: ProblemLog
) -> tuple[dict[str, list[_Box]], set[str]]:
    """Boxes per image name of one case file, and the names of frames to leave out (bad lines)."""
    boxes: dict[str, list[_Box]] = {}
    bad: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        plog.add(
            "",
            "",
            f"cannot read the annotation file ({type(exc).__name__}: {exc})",
            dropped="the case's frames",
            file=path,
        )
        return {}, set(frame_names)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, line_boxes, bad_field, message = parse_sun_line(line)
        name = Path(name.replace("\\", "/")).name
        if bad_field:
            plog.add(f"line {n}", bad_field, message, dropped=f"frame {name}", file=path)
            bad.add(name)
            continue
        if name not in frame_names:
            plog.add(
                f"line {n}",
                "image name",
                f"frame {name!r} is not in the case's frame folder",
                dropped="line",
                file=path,
            )
            continue
        # A frame may be listed on several lines (one box each): its boxes are merged.
        boxes.setdefault(name, []).extend(line_boxes)
    return boxes, bad


def read_sun(root: str | Path, check_files: bool = True, skip_invalid: bool = False) -> DatasetIndex:
    """Read the original SUN Colonoscopy layout (per-case frame folders and annotation text files)."""
    return scan_sun(root, check_files).finish(skip_invalid)
