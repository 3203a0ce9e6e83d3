"""COCO-VID (the ImageNet-VID style of mmtracking), the canonical annotation format.

A JSON object with four lists::

    videos       id, name
    images       id, file_name, video_id, frame_id, width, height; optional labelled (false: nobody
                 boxed the frame, so it is not a negative and may have no annotation; absent: true)
    annotations  id, image_id, category_id, bbox [x, y, w, h] (pixels); optional area, iscrowd,
                 instance_id, occluded, generated, ...
    categories   id, name

Any other key, at any level, is kept (``DatasetIndex.info``, ``VideoRecord.extra``,
``FrameRecord.extra``, ``FrameRecord.box_extra``) so that converting loses nothing.

Problems are collected and turned into an index or an error by `v2idetr.data.formats.scan`, as for
every reader.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from v2idetr.data.formats.scan import ProblemLog, Scan, as_int, check_box, load_json, name_matches
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord

log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("videos", "images", "annotations", "categories")
_ANN_KNOWN = ("image_id", "category_id", "bbox", "area")
_IMAGE_KNOWN = ("id", "file_name", "video_id", "frame_id", "width", "height", "labelled")
_MISSING = object()


class _Fields:
    """Reads the fields of one JSON record, reporting each missing or mistyped one once."""

    def __init__(self, plog: ProblemLog, section: str, position: int, rec: Any, dropped: str):
        self.plog, self.rec, self.dropped, self.ok = plog, rec, dropped, True
        rid = rec.get("id") if isinstance(rec, dict) else None
        self.name = f"{section}[{position}]" + (f" (id={rid})" if isinstance(rid, int | str) else "")
        if not isinstance(rec, dict):
            self.fail("", f"expected a JSON object, got {type(rec).__name__}")

    def fail(self, field_name: str, message: str) -> None:
        self.plog.add(self.name, field_name, message, dropped=self.dropped)
        self.ok = False

    def require(self, key: str) -> Any:
        """The field's value, or ``_MISSING`` (reported) when absent."""
        if not isinstance(self.rec, dict):
            return _MISSING
        if key not in self.rec:
            self.fail(key, "required field is missing")
            return _MISSING
        return self.rec[key]

    def int(self, key: str, minimum: int | None = None) -> int | None:
        value = self.require(key)
        if value is _MISSING:
            return None
        number = as_int(value)
        if number is None:
            self.fail(key, f"expected an integer, got {json.dumps(value)}")
            return None
        if minimum is not None and number < minimum:
            self.fail(key, f"expected an integer >= {minimum}, got {number}")
            return None
        return number

    def str(self, key: str) -> str | None:
        value = self.require(key)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {json.dumps(value)}")
            return None
        return value

    def flag(self, key: str, default: bool) -> bool:
        """An optional boolean field (``default`` when absent); anything but true/false is a problem."""
        value = self.rec.get(key, default) if isinstance(self.rec, dict) else default
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false (absent: {json.dumps(default)}), got {json.dumps(value)}")
            return default
        return value

    def bbox(self, key: str) -> list[float] | None:
        value = self.require(key)
        if value is _MISSING:
            return None
        if (
            not isinstance(value, list)
            or len(value) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            self.fail(key, f"expected [x, y, w, h] (4 numbers, pixels), got {json.dumps(value)}")
            return None
        return [float(v) for v in value]


def scan_coco_vid_doc(
    doc: Any,
    file: str | Path,
    resolve: Callable[[str], Path],
    *,
    check_files: bool = True,
    exclude_videos: Iterable[str] | None = None,
    required_image_fields: tuple[str, ...] = (),
    keep_image: Callable[[dict[str, Any]], bool] | None = None,
    plog: ProblemLog | None = None,
) -> Scan:
    """Check a parsed COCO-VID document and build the index of its valid records.

    ``resolve`` maps a ``file_name`` to the frame's path. ``keep_image`` (applied to valid image
    records) leaves frames out on purpose, with their annotations, without it being a problem;
    ``required_image_fields`` are extra image fields a caller depends on.

    With problems, the index still holds every valid record: a video whose record is invalid is
    left out with its frames, a frame whose record or any of whose annotations is invalid is left
    out with all its boxes (keeping it with a box missing would teach that the lesion is
    background), and an annotation of an unknown image is left out alone.
    """
    plog = plog or ProblemLog(str(file))
    if doc is None:
        return Scan(None, plog)
    if not isinstance(doc, dict):
        expected = f"expected a JSON object with keys {', '.join(TOP_LEVEL_KEYS)}, got {type(doc).__name__}"
        plog.add("", "", expected, fatal=True)
        return Scan(None, plog)
    for key in TOP_LEVEL_KEYS:
        if key not in doc:
            plog.add(
                "", key, f"missing top-level key (COCO-VID needs {', '.join(TOP_LEVEL_KEYS)})", fatal=True
            )
        elif not isinstance(doc[key], list):
            plog.add("", key, f"expected a list, got {type(doc[key]).__name__}", fatal=True)
    if plog.fatal:
        return Scan(None, plog)
    if not doc["images"]:
        plog.add("", "images", "the dataset has no images (empty dataset)", fatal=True)
        return Scan(None, plog)
    excluded_names = set(exclude_videos or ())

    # Categories, labels 0..C-1 in sorted-id order.
    cat_names: dict[int, str] = {}
    for i, rec in enumerate(doc["categories"]):
        f = _Fields(plog, "categories", i, rec, "category (its annotations are unknown-category problems)")
        cid, name = f.int("id"), f.str("name")
        if not f.ok or cid is None or name is None:
            continue
        if cid in cat_names:
            f.fail("id", f"duplicate category id {cid} (also used by '{cat_names[cid]}')")
            continue
        cat_names[cid] = name
    category_ids = sorted(cat_names)
    label_of = {cid: i for i, cid in enumerate(category_ids)}

    # Videos.
    videos: dict[int, VideoRecord] = {}
    bad_videos: set[int] = set()
    excluded_ids: set[int] = set()
    found_excluded: set[str] = set()
    seen_video_ids: set[int] = set()
    for i, rec in enumerate(doc["videos"]):
        f = _Fields(plog, "videos", i, rec, "video and its frames")
        vid, name = f.int("id"), f.str("name")
        if vid is not None and vid in seen_video_ids:
            f.fail("id", f"duplicate video id {vid}")
            continue
        if vid is not None:
            seen_video_ids.add(vid)
        if not f.ok or vid is None or name is None:
            if vid is not None:
                bad_videos.add(vid)
            continue
        match = name_matches(name, excluded_names)
        if match is not None:
            excluded_ids.add(vid)
            found_excluded.add(match)
            continue
        extra = {k: v for k, v in rec.items() if k not in ("id", "name")}
        videos[vid] = VideoRecord(video_id=vid, name=name, extra=extra)
    if excluded_names:
        log.info("%s: excluded %d video(s) by name", plog.file, len(excluded_ids))
        missing = sorted(excluded_names - found_excluded)
        if missing:
            log.info(
                "%s: %d excluded name(s) are not videos of this file: %s",
                plog.file,
                len(missing),
                missing[:10],
            )

    # Images.
    frames: dict[int, FrameRecord] = {}
    seen_image_ids: set[int] = set()
    skipped_images: set[int] = set()  # left out on purpose or with their video: annotations follow silently
    invalid_images: dict[int, tuple[int, int] | None] = {}  # left out as invalid: (width, height) if known
    frame_ids: dict[tuple[int, int], int] = {}
    for i, rec in enumerate(doc["images"]):
        f = _Fields(plog, "images", i, rec, "frame and its annotations")
        iid = f.int("id")
        file_name = f.str("file_name")
        video_id = f.int("video_id")
        frame_id = f.int("frame_id")
        width, height = f.int("width", minimum=1), f.int("height", minimum=1)
        labelled = f.flag("labelled", True)
        for key in required_image_fields:
            f.require(key)
        if iid is not None:
            if iid in seen_image_ids:
                f.fail("id", f"duplicate image id {iid}")
                continue
            seen_image_ids.add(iid)
        if video_id is not None and (video_id in excluded_ids or video_id in bad_videos):
            if iid is not None:
                skipped_images.add(iid)
            continue
        if video_id is not None and video_id not in videos:
            f.fail("video_id", f"image without video: video_id {video_id} is not in 'videos'")
        if f.ok and video_id is not None and frame_id is not None:
            other = frame_ids.get((video_id, frame_id))
            if other is not None:
                f.fail(
                    "frame_id",
                    f"frame_id {frame_id} is used twice in video {video_id} (also by image id {other})",
                )
            else:
                frame_ids[(video_id, frame_id)] = iid  # type: ignore[assignment]
        path = resolve(file_name) if file_name is not None else None
        if f.ok and check_files and path is not None and not os.path.exists(path):
            f.fail("file_name", f"frame file not found: {path}")
        if not f.ok:
            if iid is not None:
                invalid_images[iid] = (width, height) if width is not None and height is not None else None
            continue
        assert iid is not None and video_id is not None and frame_id is not None and path is not None
        if keep_image is not None and not keep_image(rec):
            skipped_images.add(iid)
            continue
        frames[iid] = FrameRecord(
            image_id=iid,
            video_id=video_id,
            frame_id=frame_id,
            path=path,
            width=width,  # type: ignore[arg-type]
            height=height,  # type: ignore[arg-type]
            file_name=file_name,  # type: ignore[arg-type]
            extra={k: v for k, v in rec.items() if k not in _IMAGE_KNOWN},
            labelled=labelled,
        )

    # Annotations.
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    labels: dict[int, list[int]] = {}
    box_extra: dict[int, list[dict[str, Any]]] = {}
    bad_frames: set[int] = set()
    seen_ann_ids: set[int] = set()
    for i, rec in enumerate(doc["annotations"]):
        f = _Fields(plog, "annotations", i, rec, "its frame")
        aid, image_id, cat = f.int("id"), f.int("image_id"), f.int("category_id")
        bbox = f.bbox("bbox")
        if image_id is not None and image_id in skipped_images:
            continue
        frame = frames.get(image_id) if image_id is not None else None
        if image_id is not None and frame is None:
            f.dropped = "annotation"
            if image_id not in seen_image_ids:
                f.fail("image_id", f"annotation points to unknown image_id {image_id}")
                continue
            # The frame is invalid itself: still check the annotation, so that one pass finds everything.
            f.dropped = "annotation (its frame is invalid too)"
        if frame is not None and not frame.labelled:
            f.fail("image_id", f"a box on image_id {image_id}, which is marked unlabelled ('labelled': false); "
                   "an unlabelled frame has no annotations: drop the box or the flag")
        if aid is not None:
            if aid in seen_ann_ids:
                f.fail("id", f"duplicate annotation id {aid}")
            seen_ann_ids.add(aid)
        if cat is not None and cat not in label_of:
            known = ", ".join(str(c) for c in category_ids) or "none"
            f.fail("category_id", f"unknown category_id {cat} (categories: {known})")
        box = None
        size = (frame.width, frame.height) if frame is not None else invalid_images.get(image_id or 0)
        if bbox is not None and size is not None:
            x, y, w, h = bbox
            box, message = check_box(x, y, x + w, y + h, *size)
            if box is None:
                f.fail("bbox", message)
        if frame is None:
            continue
        if not f.ok or image_id is None:
            if image_id is not None:
                bad_frames.add(image_id)
            continue
        assert box is not None and cat is not None
        boxes.setdefault(image_id, []).append(box)
        labels.setdefault(image_id, []).append(label_of[cat])
        box_extra.setdefault(image_id, []).append({k: v for k, v in rec.items() if k not in _ANN_KNOWN})

    for iid, frame in frames.items():
        if iid in bad_frames:
            continue
        if iid in boxes:
            frame.boxes = np.asarray(boxes[iid], dtype=np.float32).reshape(-1, 4)
            frame.labels = np.asarray(labels[iid], dtype=np.int64)
            frame.box_extra = box_extra[iid]
        videos[frame.video_id].frames.append(frame)
    empty = [v for v in videos.values() if not v.frames]
    if empty:
        log.info("%s: %d video(s) without frames left out", plog.file, len(empty))
    info = {k: v for k, v in doc.items() if k not in TOP_LEVEL_KEYS}
    index = DatasetIndex(
        videos=[v for v in videos.values() if v.frames],
        class_names=[cat_names[c] for c in category_ids],
        category_ids=category_ids,
        source=str(file),
        info=info,
    )
    return Scan(index, plog)


def scan_coco_vid(
    path: str | Path,
    images_root: str | Path | None = None,
    check_files: bool = True,
    exclude_videos: Iterable[str] | None = None,
) -> Scan:
    """Read and check a COCO-VID JSON file; frame paths are relative to its folder unless ``images_root``."""
    path = Path(path)
    plog = ProblemLog(str(path))
    base = Path(images_root) if images_root is not None else path.parent
    doc = load_json(path, plog)
    return scan_coco_vid_doc(
        doc, path, lambda name: base / name, check_files=check_files, exclude_videos=exclude_videos, plog=plog
    )


def read_coco_vid(
    path: str | Path,
    images_root: str | Path | None = None,
    skip_invalid: bool = False,
    check_files: bool = True,
    exclude_videos: Iterable[str] | None = None,
) -> DatasetIndex:
    """Read a COCO-VID JSON into a ``DatasetIndex`` (boxes ``x1, y1, x2, y2`` pixels, labels ``0..C-1``).

    Every problem is collected first; then ``DatasetError`` lists them all, or with ``skip_invalid``
    the offending records are left out and described in ``DatasetIndex.skipped``. Videos whose
    name (or last path component of it) is in ``exclude_videos`` are left out.
    """
    return scan_coco_vid(path, images_root, check_files, exclude_videos).finish(skip_invalid)
