"""`v2idetr data convert | stats | validate`: any supported layout to COCO-VID, its counts, its problems."""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from v2idetr.atomic import atomic_write_json
from v2idetr.data.index import DatasetIndex
from v2idetr.data.load import FORMATS, load_index
from v2idetr.data.validate import validate
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)

# Box size bins on sqrt(area) in pixels of the original frame: (label, lower bound inclusive).
SIZE_BINS = (("<16", 0.0), ("16-32", 16.0), ("32-64", 32.0), ("64-128", 64.0), (">=128", 128.0))


def dataset_stats(index: DatasetIndex) -> dict[str, Any]:
    """Counts that describe a dataset: videos, frames, boxes, negatives, boxes per class, box sizes.

    ``box_sizes`` bins boxes by ``sqrt(area)`` in original pixels (``SIZE_BINS``); ``degradations``
    (frames per ``FrameRecord.extra["degradation"]``) is present only when some frame has one.
    """
    per_class = Counter(int(label) for frame in index.frames() for label in frame.labels)
    sizes = dict.fromkeys((label for label, _ in SIZE_BINS), 0)
    for frame in index.frames():
        for x1, y1, x2, y2 in frame.boxes:
            side = math.sqrt(max(float(x2 - x1), 0.0) * max(float(y2 - y1), 0.0))
            label = next(label for label, low in reversed(SIZE_BINS) if side >= low)
            sizes[label] += 1
    degradations = Counter(f.degradation for f in index.frames() if f.degradation is not None)
    stats: dict[str, Any] = {
        "videos": len(index.videos),
        "frames": index.num_frames,
        "boxes": index.num_boxes,
        "negative_frames": index.num_negative_frames,
        "negative_videos": sum(1 for v in index.videos if all(f.is_negative for f in v.frames)),
        "boxes_per_class": {
            f"{name} (id {cid})": per_class.get(i, 0)
            for i, (name, cid) in enumerate(zip(index.class_names, index.category_ids, strict=True))
        },
        "box_sizes": sizes,
    }
    if degradations:
        stats["degradations"] = dict(sorted(degradations.items()))
    return stats


def format_stats(index: DatasetIndex) -> str:
    """``dataset_stats`` as the lines ``v2idetr data stats`` prints."""
    s = dataset_stats(index)
    lines = [
        f"source:          {index.source}",
        f"videos:          {s['videos']} ({s['negative_videos']} negative)",
        f"frames:          {s['frames']} ({s['negative_frames']} negative)",
        f"boxes:           {s['boxes']}",
        "boxes per class:",
        *(f"  {name}: {n}" for name, n in s["boxes_per_class"].items()),
        "box size (sqrt(area), px):",
        *(f"  {label}: {n}" for label, n in s["box_sizes"].items()),
    ]
    if "degradations" in s:
        lines.append("frames per degradation:")
        lines.extend(f"  {name}: {n}" for name, n in s["degradations"].items())
    if index.skipped:
        lines.append(f"skipped records: {len(index.skipped)}")
    return "\n".join(lines)


def _convert(args: argparse.Namespace) -> int:
    index = load_index(
        args.src,
        format=args.format,
        images_root=args.images_root,
        skip_invalid=args.skip_invalid,
        exclude=args.exclude,
        split=args.split,
    )
    if any(f.container_index is not None for f in index.frames()):
        raise DatasetError(
            Problem(
                str(args.src), "", "", "a video file cannot be written as COCO-VID; extract its frames first"
            ),
            header="cannot convert",
        )
    out = Path(args.out)
    atomic_write_json(out, index.to_coco_vid(image_root=out.resolve().parent))
    print(f"wrote {out}: {len(index.videos)} videos, {index.num_frames} frames, {index.num_boxes} boxes")
    if index.skipped:
        print(f"left out {len(index.skipped)} invalid record(s)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    index = load_index(
        args.path,
        format=args.format,
        images_root=args.images_root,
        skip_invalid=args.skip_invalid,
        check_files=not args.no_check_files,
        split=args.split,
    )
    print(format_stats(index))
    return 0


def _validate(args: argparse.Namespace) -> int:
    problems = validate(
        args.path,
        format=args.format,
        images_root=args.images_root,
        decode_images=not args.no_decode,
        split=args.split,
    )
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)")
        return 1
    print(f"{args.path}: no problems found")
    return 0


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="auto", help="dataset layout (default: detected)")
    p.add_argument("--images-root", default=None, help="folder that COCO-VID file_name paths are relative to")
    p.add_argument("--split", choices=("train", "test"), default="train", help="BUV label file to read")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="convert, describe and validate datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    c = data_sub.add_parser(
        "convert",
        help="write any supported dataset as one COCO-VID JSON",
        description="Frame paths in OUT are relative to OUT's folder; OUT is written atomically.",
    )
    c.add_argument("src", help="COCO-VID JSON, BUV / SUN / SUN-SEG folder or image folder")
    c.add_argument("--out", required=True, help="COCO-VID JSON to write")
    _add_source_options(c)
    c.add_argument("--exclude", default=None, help="text file of video names to leave out (BUV: errata file)")
    c.add_argument("--skip-invalid", action="store_true", help="leave invalid records out instead of failing")
    c.set_defaults(func=_convert)

    s = data_sub.add_parser("stats", help="count videos, frames, boxes, negatives, box sizes")
    s.add_argument("path", help="dataset (any supported layout)")
    _add_source_options(s)
    s.add_argument("--skip-invalid", action="store_true", help="leave invalid records out instead of failing")
    s.add_argument("--no-check-files", action="store_true", help="do not check that frame files exist")
    s.set_defaults(func=_stats)

    v = data_sub.add_parser(
        "validate",
        help="report every problem of a dataset (exit status 1 when there are any)",
        description="Checks the annotations and, unless --no-decode, decodes every frame file.",
    )
    v.add_argument("path", help="dataset (any supported layout)")
    _add_source_options(v)
    v.add_argument("--no-decode", action="store_true", help="skip decoding frame files (faster)")
    v.set_defaults(func=_validate)
