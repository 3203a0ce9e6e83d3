"""SUN Colonoscopy Video Database: the original per-case layout and the SUN-SEG re-organisation.

Original layout (``read_sun``)::

    root/<case>/*.jpg                  (or root/frames/<case>/*.jpg)
    root/annotation_txt/<case>.txt     (or root/annotations/<case>.txt)

One annotation line per frame: ``<image name> x1,y1,x2,y2,class`` (pixels, corners inclusive of
the convention of the release), several space-separated box groups allowed, a line with only the
image name being a frame without a polyp. Cases without an annotation file (the polyp-free
videos) are all negatives. The class integer is kept as the category id; it is named ``polyp``
when there is one class, ``class<id>`` otherwise. Frames are ordered by the numbers in their
names (natural sort) and ``frame_id`` is that position.

SUN-SEG (``read_sun_seg``)::

    root/Frame/<case>/<name>.jpg   root/GT/<case>/<name>.png   root/bbox_annotation.json

``bbox_annotation.json`` has ``images`` (id, width, height, case_name, file_name) and
``annotation`` entries (id, bbox [min_x, min_y, w, h]; linked to the image with the same id, or
by ``image_id`` when present). Without the JSON, boxes are the connected components of the masks.
With it, the JSON's axis order is checked against the masks (one public converter wrote y, x) and
a mismatch is refused.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from v2idetr.data.formats.cocovid import ProblemLog, Scan, as_int, check_box, load_json
from v2idetr.data.formats.media import IMAGE_ERRORS, image_files, logged_image_size, natural_key
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord

log = logging.getLogger(__name__)

ANNOTATION_DIRS = ("annotation_txt", "annotations")
# Mask components smaller than this (pixels) are annotation specks, not polyps.
MIN_MASK_COMPONENT = 16
# Frames per case whose JSON box is compared with the mask (the check is about the file's convention).
AXIS_CHECK_PER_CASE = 2

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


def mask_boxes(mask: np.ndarray) -> list[tuple[float, float, float, float]]:
    """``x1, y1, x2, y2`` boxes of the connected foreground components of an ``[H, W]`` mask.

    Pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``, so a one-pixel component has a 1 x 1 box.
    """
    labelled, _ = ndimage.label(mask > 0)
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labelled), start=1):
        if sl is None or int((labelled[sl] == i).sum()) < MIN_MASK_COMPONENT:
            continue
        rows, cols = sl
        boxes.append((float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)))
    return boxes


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _find_frame(frame_dir: Path, case: str, file_name: str) -> Path:
    name = Path(file_name.replace("\\", "/")).name
    base = frame_dir / case / name
    if base.suffix.lower() in (".jpg", ".jpeg", ".png") or base.exists():
        return base
    return base.with_name(name + ".jpg")


def scan_sun_seg(root: str | Path, check_files: bool = True) -> Scan:
    """Check a SUN-SEG split folder (``Frame/``, ``GT/``, optional ``bbox_annotation.json``) and index it."""
    root = Path(root)
    plog = ProblemLog(str(root))
    frame_dir, gt_dir = root / "Frame", root / "GT"
    if not frame_dir.is_dir():
        plog.add("", "", f"SUN-SEG folder has no Frame/ sub-folder: {root}", fatal=True)
        return Scan(None, plog)
    json_path = root / "bbox_annotation.json"
    if json_path.is_file():
        return _scan_sun_seg_json(root, json_path, check_files)
    cases = sorted((d for d in frame_dir.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name))
    videos: list[VideoRecord] = []
    image_id = 1
    for video_id, case_dir in enumerate(cases, start=1):
        video = VideoRecord(video_id=video_id, name=case_dir.name)
        for file in image_files(case_dir):
            size = logged_image_size(file, plog)
            if size is None:
                continue
            width, height = size
            frame = FrameRecord(
                image_id=image_id,
                video_id=video_id,
                frame_id=len(video.frames),
                path=file,
                width=width,
                height=height,
                file_name=file.relative_to(root).as_posix(),
            )
            mask_path = gt_dir / case_dir.name / (file.stem + ".png")
            if mask_path.is_file():
                try:
                    boxes = mask_boxes(_read_mask(mask_path))
                except IMAGE_ERRORS as exc:
                    plog.add(
                        mask_path.name,
                        "mask",
                        f"not a readable mask ({type(exc).__name__}: {exc})",
                        dropped="frame",
                        file=mask_path,
                    )
                    continue
                if boxes:
                    frame.boxes = np.asarray(boxes, dtype=np.float32)
                    frame.labels = np.zeros(len(boxes), dtype=np.int64)
            video.frames.append(frame)
            image_id += 1
        if video.frames:
            videos.append(video)
    if not videos:
        plog.add("", "", f"no frames under {frame_dir}", fatal=True)
        return Scan(None, plog)
    return Scan(DatasetIndex(videos=videos, class_names=["polyp"], category_ids=[1], source=str(root)), plog)


def _scan_sun_seg_json(root: Path, json_path: Path, check_files: bool) -> Scan:
    plog = ProblemLog(str(json_path))
    doc = load_json(json_path, plog)
    if doc is None:
        return Scan(None, plog)
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("images"), list)
        or not isinstance(doc.get("annotation"), list)
    ):
        plog.add("", "images", "expected a JSON object with lists 'images' and 'annotation'", fatal=True)
        return Scan(None, plog)
    videos: dict[str, VideoRecord] = {}
    frames: dict[int, FrameRecord] = {}
    listed: set[int] = set()  # image ids seen, valid or not: their annotations are no extra problem
    for i, rec in enumerate(doc["images"]):
        record = f"images[{i}]" + (f" (id={rec.get('id')})" if isinstance(rec, dict) else "")
        if isinstance(rec, dict) and as_int(rec.get("id")) is not None:
            listed.add(as_int(rec["id"]))  # type: ignore[arg-type]
        fields: dict[str, Any] = {}
        for key in ("id", "width", "height", "case_name", "file_name"):
            value = rec.get(key) if isinstance(rec, dict) else None
            ok = (
                isinstance(value, str) and value
                if key in ("case_name", "file_name")
                else as_int(value) is not None
            )
            if not ok:
                plog.add(
                    record,
                    key,
                    f"required field missing or of the wrong type (got {value!r})",
                    dropped="frame",
                )
                break
            fields[key] = value if key in ("case_name", "file_name") else as_int(value)
        else:
            if fields["id"] in frames:
                plog.add(record, "id", f"duplicate image id {fields['id']}", dropped="frame")
                continue
            path = _find_frame(root / "Frame", fields["case_name"], fields["file_name"])
            if check_files and not path.exists():
                plog.add(record, "file_name", f"frame file not found: {path}", dropped="frame")
                continue
            video = videos.setdefault(
                fields["case_name"], VideoRecord(video_id=len(videos) + 1, name=fields["case_name"])
            )
            frames[fields["id"]] = FrameRecord(
                image_id=fields["id"],
                video_id=video.video_id,
                frame_id=0,
                path=path,
                width=fields["width"],
                height=fields["height"],
                file_name=path.relative_to(root).as_posix(),
                extra={
                    k: v
                    for k, v in rec.items()
                    if k not in ("id", "width", "height", "case_name", "file_name")
                },
            )
            video.frames.append(frames[fields["id"]])
    raw: list[tuple[str, int, tuple[float, float, float, float]]] = []  # (record, image id, x1,y1,x2,y2)
    bad: set[int] = set()  # frames with an invalid box: left out whole
    for i, rec in enumerate(doc["annotation"]):
        record = f"annotation[{i}]" + (f" (id={rec.get('id')})" if isinstance(rec, dict) else "")
        target = as_int(rec.get("image_id", rec.get("id"))) if isinstance(rec, dict) else None
        bbox = rec.get("bbox") if isinstance(rec, dict) else None
        if target is not None and target in listed and target not in frames:
            continue
        if target is None or target not in frames:
            plog.add(record, "id", f"does not name a known image (got {target!r})", dropped="annotation")
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            plog.add(record, "bbox", f"expected [min_x, min_y, w, h], got {bbox!r}", dropped="frame")
            bad.add(target)
            continue
        x, y, w, h = (float(v) for v in bbox)
        raw.append((record, target, (x, y, x + w, y + h)))
    # The axis order decides how every box is read, so it is checked before the boxes themselves.
    per_frame: dict[int, list[tuple[float, float, float, float]]] = {}
    for _, target, box in raw:
        per_frame.setdefault(target, []).append(box)
    _check_axis_order(root, json_path, videos, per_frame, plog)
    if plog.fatal:
        return Scan(None, plog)
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for record, target, (x1, y1, x2, y2) in raw:
        frame = frames[target]
        box, message = check_box(x1, y1, x2, y2, frame.width, frame.height)
        if box is None:
            plog.add(record, "bbox", message, dropped="frame")
            bad.add(target)
            continue
        boxes.setdefault(target, []).append(box)
    kept: list[VideoRecord] = []
    for video in videos.values():
        video.frames = [f for f in video.frames if f.image_id not in bad]
        video.frames.sort(key=lambda f: natural_key(Path(f.file_name).name))
        for n, frame in enumerate(video.frames):
            frame.frame_id = n
            if frame.image_id in boxes:
                frame.boxes = np.asarray(boxes[frame.image_id], dtype=np.float32)
                frame.labels = np.zeros(len(frame.boxes), dtype=np.int64)
        if video.frames:
            kept.append(video)
    index = DatasetIndex(videos=kept, class_names=["polyp"], category_ids=[1], source=str(json_path))
    return Scan(index, plog)


def _check_axis_order(
    root: Path,
    json_path: Path,
    videos: dict[str, VideoRecord],
    boxes: dict[int, list[tuple[float, float, float, float]]],
    plog: ProblemLog,
) -> None:
    """Compare the JSON boxes of a few frames per case with their masks, read as x,y and as y,x.

    A file that fits the masks only when read as y,x was written by a converter that swapped the
    axes; reading it as x,y would train on wrong boxes, so it is a fatal problem.
    """
    compared, fits_xy, fits_yx = 0, 0, 0
    for case, video in videos.items():
        checked = 0
        for frame in video.frames:
            if (
                checked >= AXIS_CHECK_PER_CASE
                or frame.image_id not in boxes
                or len(boxes[frame.image_id]) != 1
            ):
                continue
            mask_path = root / "GT" / case / (Path(frame.file_name).stem + ".png")
            if not mask_path.is_file():
                continue
            try:
                from_mask = mask_boxes(_read_mask(mask_path))
            except IMAGE_ERRORS:
                continue
            if len(from_mask) != 1:
                continue
            checked += 1
            compared += 1
            x1, y1, x2, y2 = boxes[frame.image_id][0]
            # The same four numbers read as [min_y, min_x, h, w].
            swapped = (y1, x1, y1 + (y2 - y1), x1 + (x2 - x1))
            fits_xy += _iou((x1, y1, x2, y2), from_mask[0]) >= 0.5
            fits_yx += _iou(swapped, from_mask[0]) >= 0.5
    if compared == 0:
        log.info("%s: no masks to check the box axis order against", json_path)
        return
    if fits_xy < compared / 2:
        order = "y, x" if fits_yx >= compared / 2 else "neither x, y nor y, x"
        message = (
            f"the boxes do not match the masks in GT/: read as [min_x, min_y, w, h] {fits_xy}/{compared} "
            f"checked frames agree, read as [min_y, min_x, h, w] {fits_yx}/{compared}; the file seems to use "
            f"{order} order. Regenerate bbox_annotation.json in [min_x, min_y, w, h] order or remove it to "
            "take boxes from the masks"
        )
        plog.add("annotation", "bbox", message, fatal=True)


def read_sun_seg(root: str | Path, check_files: bool = True, skip_invalid: bool = False) -> DatasetIndex:
    """Read a SUN-SEG split folder (e.g. ``TrainDataset``) into a ``DatasetIndex`` (one class, ``polyp``)."""
    return scan_sun_seg(root, check_files).finish(skip_invalid)
