"""BUV: the breast ultrasound video dataset released with CVA-Net (MICCAI 2022).

Layout::

    root/rawframes/{benign,malignant}/<video-hash>/000000.png
    root/imagenet_vid_train_15frames.json     train labels (COCO-VID)
    root/imagenet_vid_val.json                test labels (there is no separate validation set)

The label files may also sit in ``root/annotations/``. ``file_name`` is relative to
``root/rawframes`` in the release; paths relative to ``root`` are accepted too. Besides the
COCO-VID fields, ``videos[].vid_train_frames`` and ``images[].is_vid_train_frame`` mark the frames
the video models train on (the image baselines use every frame). Categories: 1 benign,
2 malignant.

Errata file (the release's README lists one duplicate video and four same-patient videos that
should be malignant; users supply the names)::

    # comments and blank lines are ignored
    exclude <video-name>            leave the video out
    relabel <video-name> <class>    give every box of the video this class (e.g. malignant)
    <video-name>                    same as exclude

A video name is the JSON's ``videos[].name`` or its last path component (the hash). A name that
is a video of neither split, or a class that is not a category, is an error naming the line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from v2idetr.data.formats.cocovid import scan_coco_vid_doc
from v2idetr.data.formats.scan import ProblemLog, Scan, load_json, name_matches
from v2idetr.data.index import DatasetIndex
from v2idetr.errors import ConfigError

log = logging.getLogger(__name__)

LABEL_FILES = {"train": "imagenet_vid_train_15frames.json", "test": "imagenet_vid_val.json"}
SPLIT_ALIASES = {"val": "test"}  # the release has no validation set; its test set is used for it


def labels_path(root: Path, split: str) -> Path:
    """The split's label file: ``root/<name>`` or ``root/annotations/<name>`` (the first that exists)."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in LABEL_FILES:
        raise ConfigError(f"BUV split {split!r}: expected one of {', '.join(LABEL_FILES)}")
    candidates = [root / LABEL_FILES[split], root / "annotations" / LABEL_FILES[split]]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _resolver(root: Path):
    """Maps ``file_name`` to ``root/rawframes/<name>`` or ``root/<name>``, whichever exists."""

    def resolve(name: str) -> Path:
        first, second = root / "rawframes" / name, root / name
        if os.path.exists(first) or not os.path.exists(second):
            return first
        return second

    return resolve


def _video_names(path: Path) -> set[str]:
    """Names of the videos of a label file, or an empty set when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return {
            v["name"] for v in doc.get("videos", []) if isinstance(v, dict) and isinstance(v.get("name"), str)
        }
    except (OSError, ValueError, AttributeError):
        return set()


def parse_errata(
    path: str | Path, known_videos: set[str], class_names: list[str], plog: ProblemLog
) -> tuple[set[str], dict[str, str]]:
    """Read an errata file into (names to exclude, name -> class name); bad lines go to ``plog``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        plog.add("", "", f"cannot read the errata file ({type(exc).__name__}: {exc})", fatal=True, file=path)
        return set(), {}
    known_tails = {n.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] for n in known_videos}
    classes = {c.lower(): c for c in class_names}
    exclude: set[str] = set()
    relabel: dict[str, str] = {}
    for n, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) == 1:
            words = ["exclude", words[0]]
        command = words[0].lower()
        record = f"line {n}"
        if command not in ("exclude", "relabel"):
            plog.add(
                record,
                "command",
                f"expected 'exclude <video>' or 'relabel <video> <class>', got {raw.strip()!r}",
                fatal=True,
                file=path,
            )
            continue
        if (command == "exclude" and len(words) != 2) or (command == "relabel" and len(words) != 3):
            usage = "exclude <video>" if command == "exclude" else "relabel <video> <class>"
            plog.add(record, "command", f"expected '{usage}', got {raw.strip()!r}", fatal=True, file=path)
            continue
        name = words[1]
        if name not in known_videos and name not in known_tails:
            plog.add(
                record,
                "video",
                f"unknown video {name!r}: not a video of the BUV train or test labels",
                fatal=True,
                file=path,
            )
            continue
        if command == "exclude":
            exclude.add(name)
            continue
        target = classes.get(words[2].lower())
        if target is None:
            plog.add(
                record,
                "class",
                f"unknown class {words[2]!r}; expected one of {', '.join(class_names)}",
                fatal=True,
                file=path,
            )
            continue
        relabel[name] = target
    return exclude, relabel


def scan_buv(
    root: str | Path,
    split: str = "train",
    vid_train_only: bool = False,
    errata: str | Path | None = None,
    check_files: bool = True,
) -> Scan:
    """Check the BUV split and index it, with errata applied."""
    root = Path(root)
    json_path = labels_path(root, split)
    plog = ProblemLog(str(json_path))
    if not root.is_dir():
        plog.add("", "", f"BUV root folder {root} not found", fatal=True)
        return Scan(None, plog)
    if not json_path.is_file():
        expected = f"expected {json_path.name} in {root} or {root / 'annotations'}"
        plog.add("", "", f"BUV {split} labels not found ({expected})", fatal=True)
        return Scan(None, plog)
    doc = load_json(json_path, plog)
    exclude: set[str] = set()
    relabel: dict[str, str] = {}
    if errata is not None and isinstance(doc, dict):
        other = labels_path(root, "test" if split == "train" else "train")  # errata name videos of both
        known = _video_names(json_path) | _video_names(other)
        names = [c.get("name", "") for c in doc.get("categories", []) if isinstance(c, dict)]
        exclude, relabel = parse_errata(errata, known, [n for n in names if isinstance(n, str)], plog)
    scan = scan_coco_vid_doc(
        doc,
        json_path,
        _resolver(root),
        check_files=check_files,
        exclude_videos=exclude,
        required_image_fields=("is_vid_train_frame",) if vid_train_only else (),
        keep_image=(lambda rec: bool(rec.get("is_vid_train_frame"))) if vid_train_only else None,
        plog=plog,
    )
    if scan.index is not None and relabel:
        _relabel(scan.index, relabel)
    return scan


def _relabel(index: DatasetIndex, relabel: dict[str, str]) -> None:
    """Give every box of the named videos the named class."""
    wanted = set(relabel)
    for video in index.videos:
        match = name_matches(video.name, wanted)
        if match is None:
            continue
        label = index.class_names.index(relabel[match])
        changed = 0
        for frame in video.frames:
            changed += int((frame.labels != label).sum())
            frame.labels[:] = label
        log.info("errata: video %s relabelled %s (%d box(es) changed)", video.name, relabel[match], changed)


def read_buv(
    root: str | Path,
    split: str = "train",
    vid_train_only: bool = False,
    errata: str | Path | None = None,
    check_files: bool = True,
    skip_invalid: bool = False,
) -> DatasetIndex:
    """Read a BUV split (``"train"`` or ``"test"``) into a ``DatasetIndex``.

    ``vid_train_only`` keeps only the frames flagged ``is_vid_train_frame`` (the video models'
    training frames). ``errata`` is a text file of ``exclude``/``relabel`` lines (module docstring).
    """
    return scan_buv(root, split, vid_train_only, errata, check_files).finish(skip_invalid)
