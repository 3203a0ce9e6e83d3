"""`v2idetr data convert | stats | validate | sparsify | add-frames | merge`: any supported layout to COCO-VID,
its counts, its problems; a label budget (one labelled frame in K), the frames the labels leave out, or
several datasets as one."""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from v2idetr.argtypes import out_file, positive_int
from v2idetr.atomic import atomic_write_json
from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.data.load import FORMATS, load_index
from v2idetr.data.merge import merge_indexes
from v2idetr.data.pseudo_labels import is_pseudo_labelled
from v2idetr.data.unlabelled import add_frames, sparsify
from v2idetr.data.validate import validate
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)

# Box size bins on sqrt(area) in pixels of the original frame: (label, lower bound inclusive).
SIZE_BINS = (("<16", 0.0), ("16-32", 16.0), ("32-64", 32.0), ("64-128", 64.0), (">=128", 128.0))


def dataset_stats(index: DatasetIndex) -> dict[str, Any]:
    """Counts that describe a dataset: videos, frames (labelled / unlabelled), boxes, negatives, boxes
    per class, box sizes. Negatives are labelled frames without boxes; a negative video has labelled
    frames and all of them are negatives (unlabelled frames say nothing either way).

    ``pseudo_labelled_frames`` (present when some are) counts the labelled frames whose boxes came
    from a model (`v2idetr pseudo-label`). ``box_sizes`` bins boxes by ``sqrt(area)`` in original
    pixels (``SIZE_BINS``); ``degradations`` (frames per ``FrameRecord.extra["degradation"]``) is
    present only when some frame has one.
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
        "labelled_frames": index.num_frames - index.num_unlabelled_frames,
        "unlabelled_frames": index.num_unlabelled_frames,
        "boxes": index.num_boxes,
        "negative_frames": index.num_negative_frames,
        "negative_videos": sum(1 for v in index.videos if _is_negative_video(v.frames)),
        "boxes_per_class": {
            f"{name} (id {cid})": per_class.get(i, 0)
            for i, (name, cid) in enumerate(zip(index.class_names, index.category_ids, strict=True))
        },
        "box_sizes": sizes,
    }
    pseudo = sum(1 for f in index.frames() if is_pseudo_labelled(f))
    if pseudo:
        stats["pseudo_labelled_frames"] = pseudo
    if degradations:
        stats["degradations"] = dict(sorted(degradations.items()))
    return stats


def _is_negative_video(frames: list[FrameRecord]) -> bool:
    labelled = [f for f in frames if f.labelled]
    return bool(labelled) and all(f.is_negative for f in labelled)


def format_stats(index: DatasetIndex) -> str:
    """``dataset_stats`` as the lines ``v2idetr data stats`` prints."""
    s = dataset_stats(index)
    frames = f"{s['frames']} ({s['negative_frames']} negative)"
    if s["unlabelled_frames"]:
        frames = (
            f"{s['frames']} ({s['labelled_frames']} labelled, {s['negative_frames']} of them negative; "
            f"{s['unlabelled_frames']} unlabelled)"
        )
    lines = [
        f"source:          {index.source}",
        f"videos:          {s['videos']} ({s['negative_videos']} negative)",
        f"frames:          {frames}",
        f"boxes:           {s['boxes']}",
        "boxes per class:",
        *(f"  {name}: {n}" for name, n in s["boxes_per_class"].items()),
        "box size (sqrt(area), px):",
        *(f"  {label}: {n}" for label, n in s["box_sizes"].items()),
    ]
    if "pseudo_labelled_frames" in s:
        lines.insert(3, f"pseudo-labelled: {s['pseudo_labelled_frames']} of the labelled frames (a model's boxes)")
    if "degradations" in s:
        lines.append("frames per degradation:")
        lines.extend(f"  {name}: {n}" for name, n in s["degradations"].items())
    if index.skipped:
        lines.append(f"skipped records: {len(index.skipped)}")
    return "\n".join(lines)


def check_coco_vid_writable(index: DatasetIndex, src: str, out_path: str) -> None:
    """``DatasetError`` when ``index`` cannot be COCO-VID (frames inside video files): call it before a
    long job (a teacher's pass) whose result goes to ``write_coco_vid``."""
    if any(f.container_index is not None for f in index.frames()):
        raise DatasetError(
            Problem(str(src), "", "", "a video file cannot be written as COCO-VID; extract its frames first"),
            header=f"cannot write {out_path}",
        )


def write_coco_vid(index: DatasetIndex, src: str, out_path: str) -> Path:
    """Write ``index`` atomically as COCO-VID with frame paths relative to the output's folder."""
    check_coco_vid_writable(index, src, out_path)
    out = Path(out_path)
    atomic_write_json(out, index.to_coco_vid(image_root=out.resolve().parent))
    return out


def _frame_counts(index: DatasetIndex) -> str:
    labelled = index.num_frames - index.num_unlabelled_frames
    return f"{len(index.videos)} videos, {labelled} labelled frames, {index.num_unlabelled_frames} unlabelled frames"


def _convert(args: argparse.Namespace) -> int:
    index = load_index(
        args.src,
        format=args.format,
        images_root=args.images_root,
        skip_invalid=args.skip_invalid,
        exclude=args.exclude,
        split=args.split,
    )
    out = write_coco_vid(index, args.src, args.out)
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


def _sparsify(args: argparse.Namespace) -> int:
    index = load_index(args.labels, format=args.format, images_root=args.images_root, split=args.split)
    sparse = sparsify(index, args.every)
    out = write_coco_vid(sparse, args.labels, args.out)
    print(f"wrote {out}: {_frame_counts(sparse)}, {sparse.num_boxes} boxes kept (of {index.num_boxes})")
    return 0


def _add_frames(args: argparse.Namespace) -> int:
    index = load_index(args.labels, format=args.format, images_root=args.frames_root, split=args.split)
    full, added = add_frames(index, args.frames_root)
    per_video = [
        len(new.frames) - len(old.frames) for old, new in zip(index.videos, full.videos, strict=True)
    ]
    splits: Counter[str] = Counter()
    for video, n in zip(full.videos, per_video, strict=True):
        if "split" in video.extra:
            splits[str(video.extra["split"])] += n
    by_split = f" ({', '.join(f'{k}: {n}' for k, n in sorted(splits.items()))})" if splits else ""
    videos = sum(1 for n in per_video if n)
    print(f"added {added} unlabelled frames{by_split} to {videos} of {len(full.videos)} videos")
    out = write_coco_vid(full, args.labels, args.out)
    print(f"wrote {out}: {_frame_counts(full)}, {full.num_boxes} boxes")
    return 0


def _merge(args: argparse.Namespace) -> int:
    merged = merge_indexes([load_index(path) for path in args.datasets])
    out = write_coco_vid(merged, args.datasets[0], args.out)
    pseudo = sum(1 for f in merged.frames() if is_pseudo_labelled(f))
    print(f"wrote {out}: {_frame_counts(merged)}" + (f" ({pseudo} of them pseudo-labelled)" if pseudo else "")
          + f", {merged.num_boxes} boxes")
    return 0


def add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="auto", help="dataset layout (default: detected)")
    p.add_argument("--images-root", default=None, help="folder that COCO-VID file_name paths are relative to")
    p.add_argument("--split", choices=("train", "test"), default="train", help="BUV label file to read")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="convert, describe, validate datasets; label budgets, unlabelled frames")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    c = data_sub.add_parser(
        "convert",
        help="write any supported dataset as one COCO-VID JSON",
        description="Frame paths in OUT are relative to OUT's folder; OUT is written atomically.",
    )
    c.add_argument("src", help="COCO-VID JSON, BUV / SUN / SUN-SEG folder or image folder")
    c.add_argument("--out", type=out_file, required=True, help="COCO-VID JSON to write")
    add_source_options(c)
    c.add_argument("--exclude", default=None, help="text file of video names to leave out (BUV: errata file)")
    c.add_argument("--skip-invalid", action="store_true", help="leave invalid records out instead of failing")
    c.set_defaults(func=_convert)

    s = data_sub.add_parser("stats", help="count videos, frames, boxes, negatives, box sizes")
    s.add_argument("path", help="dataset (any supported layout)")
    add_source_options(s)
    s.add_argument("--skip-invalid", action="store_true", help="leave invalid records out instead of failing")
    s.add_argument("--no-check-files", action="store_true", help="do not check that frame files exist")
    s.set_defaults(func=_stats)

    v = data_sub.add_parser(
        "validate",
        help="report every problem of a dataset (exit status 1 when there are any)",
        description="Checks the annotations and, unless --no-decode, decodes every frame file.",
    )
    v.add_argument("path", help="dataset (any supported layout)")
    add_source_options(v)
    v.add_argument("--no-decode", action="store_true", help="skip decoding frame files (faster)")
    v.set_defaults(func=_validate)

    sp = data_sub.add_parser(
        "sparsify",
        help="keep the labels of one frame in K per video (a label budget); the others become unlabelled",
        description=(
            "In each video (frames in frame_id order) the frames at positions K//2, K//2 + K, ... keep "
            "their labels (the middle of each run of K; a video shorter than K//2 + 1 frames keeps its middle "
            "frame); every other frame is written unlabelled ('labelled': false: no boxes, not a negative). "
            "OUT is COCO-VID, frame paths relative to its folder, written atomically."
        ),
    )
    sp.add_argument("labels", metavar="LABELS", help="dataset (any supported layout)")
    sp.add_argument("--every", type=positive_int, required=True, metavar="K", help="one labelled frame in K")
    sp.add_argument("--out", type=out_file, required=True, help="COCO-VID JSON to write")
    add_source_options(sp)
    sp.set_defaults(func=_sparsify)

    af = data_sub.add_parser(
        "add-frames",
        help="add the frames of each video's folder that the labels do not list, unlabelled",
        description=(
            "Each video's folder is the one folder holding its listed frames; every other image there is "
            "added with 'labelled': false. Its frame_id follows from its place in the folder (natural name "
            "order) and the listed frames' numbering, which must agree. OUT is COCO-VID, frame paths "
            "relative to its folder, written atomically."
        ),
    )
    af.add_argument("labels", metavar="LABELS", help="label file (COCO-VID JSON; or a BUV / SUN folder)")
    af.add_argument(
        "--frames-root",
        required=True,
        help="folder the label file's frame names are relative to (BUV: rawframes)",
    )
    af.add_argument("--out", type=out_file, required=True, help="COCO-VID JSON to write")
    af.add_argument("--format", choices=FORMATS, default="auto", help="dataset layout (default: detected)")
    af.add_argument("--split", choices=("train", "test"), default="train", help="BUV label file to read")
    af.set_defaults(func=_add_frames)

    m = data_sub.add_parser(
        "merge",
        help="several datasets as one COCO-VID file (labelled videos and a pseudo-labelled archive)",
        description=(
            "The datasets' classes must agree (names and order); a video name or frame file in two of them is "
            "an error. Image and video ids are renumbered; pseudo-labels stay marked. OUT is COCO-VID, frame "
            "paths relative to its folder, written atomically. Each dataset's layout is detected (a COCO-VID "
            "file's frames relative to its own folder: `data convert --images-root` others first)."
        ),
    )
    m.add_argument("datasets", nargs="+", metavar="DATASET", help="two or more datasets (any supported layout)")
    m.add_argument("--out", type=out_file, required=True, help="COCO-VID JSON to write")
    m.set_defaults(func=_merge)
