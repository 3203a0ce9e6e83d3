"""SUN-SEG, the re-organisation of the SUN Colonoscopy Video Database (the original layout is in `sun`)::

    root/Frame/<case>/<name>.jpg   root/GT/<case>/<name>.png   root/bbox_annotation.json

``bbox_annotation.json`` has ``images`` (id, width, height, case_name, file_name) and
``annotation`` entries (id, bbox [min_x, min_y, w, h]; linked to the image with the same id, or
by ``image_id`` when present). Without the JSON, boxes are the connected components of the masks.
With it, the JSON's axis order is checked against the masks (one public converter wrote y, x) and
a mismatch is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from v2idetr.data.formats.media import IMAGE_ERRORS, image_files, logged_image_size, natural_key
from v2idetr.data.formats.scan import ProblemLog, Scan, as_int, check_box, load_json
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord

log = logging.getLogger(__name__)

# Mask components smaller than this (pixels) are annotation specks, not polyps.
MIN_MASK_COMPONENT = 16
# Frames per case whose JSON box is compared with the mask (the check is about the file's convention).
AXIS_CHECK_PER_CASE = 2


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
