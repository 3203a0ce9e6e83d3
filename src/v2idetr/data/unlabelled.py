"""Frames nobody labelled: mark some (a label budget) or add them from the frame folders.

Labelling every frame of a video is what makes video datasets expensive; the video teacher and
distillation can use frames nobody boxed (``FrameRecord.labelled`` False: not negatives, never in a
detection loss or a metric). ``sparsify`` simulates a label budget on a fully labelled dataset
(one labelled frame in ``every``); ``add_frames`` brings back the frames of the videos' folders
that the label file does not list (BUV labels, for one, list a subset of each video's frames).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

from v2idetr.atomic import atomic_write_bytes, atomic_write_json
from v2idetr.data.formats.cocovid import read_coco_vid
from v2idetr.data.formats.media import IMAGE_ERRORS, image_files, image_size
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord, empty_boxes, empty_labels
from v2idetr.errors import ConfigError, DatasetError, Problem


def kept_positions(num_frames: int, every: int) -> list[int]:
    """Positions (0-based, in frame order) whose labels a video of ``num_frames`` frames keeps.

    The middle of each run of ``every`` frames: ``every // 2``, ``every // 2 + every``, ...; a video
    too short to reach ``every // 2`` keeps its middle frame (``num_frames // 2``), so that no
    video loses all of its labels to the budget.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(
            f"label budget option 'every' = {every!r}: expected an integer >= 1 (1 keeps every label)"
        )
    kept = list(range(every // 2, num_frames, every))
    return kept if kept or num_frames == 0 else [num_frames // 2]


def unlabel(frame: FrameRecord) -> None:
    """Mark a frame unlabelled: its boxes go (an unlabelled frame has none; it is not a negative)."""
    frame.labelled = False
    frame.boxes, frame.labels, frame.box_extra = empty_boxes(), empty_labels(), []


def sparsify(index: DatasetIndex, every: int) -> DatasetIndex:
    """A deep copy in which only one frame in ``every`` per video keeps its labels (``kept_positions``).

    Deterministic: the same positions for the same video length. Frames already unlabelled stay so
    (a kept position that is unlabelled is not replaced by another frame). ``every == 1`` keeps all.
    Frame ``extra`` fields (degradation, ...) are kept: they describe the image, not the labels.
    """
    out = copy.deepcopy(index)
    for video in out.videos:
        video.sort()
        kept = set(kept_positions(len(video.frames), every))
        for position, frame in enumerate(video.frames):
            if position not in kept:
                unlabel(frame)
    return out


def _folder_of(video: VideoRecord, source: str) -> tuple[Path | None, list[Problem]]:
    """The one folder holding all the video's listed frames, or the problem why there is none."""
    record = f"video {video.name!r} (id={video.video_id})"
    if any(f.container_index is not None for f in video.frames):
        return None, [
            Problem(
                source,
                record,
                "file_name",
                "its frames are inside a video file; adding frames needs a folder of frame images",
            )
        ]
    folders = sorted({Path(f.path).resolve().parent for f in video.frames})
    if len(folders) > 1:
        shown = ", ".join(str(p) for p in folders[:5]) + (" ..." if len(folders) > 5 else "")
        return None, [
            Problem(
                source,
                record,
                "file_name",
                f"its frames lie in {len(folders)} folders ({shown}); "
                "adding frames needs one folder per video",
            )
        ]
    return folders[0], []


def _file_name(path: Path, frames_root: Path) -> str:
    try:
        return path.relative_to(frames_root).as_posix()
    except ValueError:
        return str(path)


def _offset(video: VideoRecord, files: list[Path], where: Problem) -> tuple[int, Problem | None]:
    """``frame_id - position`` shared by the video's listed frames (positions: index in ``files``),
    or the problem: a listed frame that is not one of ``files``, or two frames that disagree."""
    position = {p: i for i, p in enumerate(files)}
    first: tuple[str, int, int] | None = None  # name, frame_id, position of the first listed frame
    for frame in video.frames:
        path = Path(frame.path).resolve()
        if path not in position:
            message = f"listed frame {path} (frame_id {frame.frame_id}) is not an image file of {path.parent}"
            return 0, replace(where, field="file_name", message=message)
        if first is None:
            first = (path.name, frame.frame_id, position[path])
        elif frame.frame_id - position[path] != first[1] - first[2]:
            message = (
                f"frame numbering does not follow the folder's name order: {path.name} has frame_id "
                f"{frame.frame_id} at position {position[path]}, but {first[0]} has frame_id {first[1]} at "
                f"position {first[2]} (positions count the folder's images in natural name order from 0)"
            )
            return 0, replace(where, field="frame_id", message=message)
    assert first is not None  # a video has frames
    return first[1] - first[2], None


def add_frames(index: DatasetIndex, frames_root: str | Path) -> tuple[DatasetIndex, int]:
    """A deep copy with every image of each video's folder that the labels do not list added as an
    unlabelled frame; returns it and the number of frames added.

    A video's folder is the one folder holding all its listed frames. Its images, in natural name
    order (``frame2`` before ``frame10``), get positions 0, 1, ...; the listed frames fix the offset
    ``frame_id - position`` (the same for all of them, else the numbering is ambiguous and this is
    an error), and a new frame at position ``p`` gets ``frame_id = p + offset``. New image ids
    follow the largest existing one; sizes come from the image headers. ``file_name`` of a new frame
    is relative to ``frames_root`` (the folder the label file's names are relative to) when it lies
    under it. Every problem is collected and raised together as one ``DatasetError``.
    """
    root = Path(frames_root).resolve()
    source = index.source or str(frames_root)
    if not root.is_dir():
        raise DatasetError(
            Problem(str(frames_root), "", "", "frames root is not a folder"), header="cannot add frames"
        )
    out = copy.deepcopy(index)
    listed = {Path(f.path).resolve() for f in out.frames()}
    problems: list[Problem] = []
    owner: dict[Path, str] = {}
    plans: list[tuple[VideoRecord, list[Path], int]] = []
    for video in out.videos:
        video.sort()
        record = f"video {video.name!r} (id={video.video_id})"
        folder, found = _folder_of(video, source)
        problems += found
        if folder is None:
            continue
        if folder in owner:
            problems.append(
                Problem(
                    source,
                    record,
                    "file_name",
                    f"its folder {folder} also holds the frames of video {owner[folder]}: "
                    "an unlisted frame there could be either's; adding frames needs one folder per video",
                )
            )
            continue
        owner[folder] = repr(video.name)
        files = [p.resolve() for p in image_files(folder)]
        offset, problem = _offset(video, files, Problem(source, record, "", ""))
        if problem is not None:
            problems.append(problem)
        else:
            plans.append((video, files, offset))
    next_id = max((f.image_id for f in out.frames()), default=0) + 1
    added = 0
    for video, files, offset in plans:
        for p, path in enumerate(files):
            if path in listed:
                continue
            try:
                width, height = image_size(path)
            except IMAGE_ERRORS as exc:
                problems.append(
                    Problem(
                        str(path),
                        f"video {video.name!r}",
                        "file_name",
                        f"not a readable image ({type(exc).__name__}: {exc})",
                    )
                )
                continue
            video.frames.append(
                FrameRecord(
                    image_id=next_id,
                    video_id=video.video_id,
                    frame_id=p + offset,
                    path=path,
                    width=width,
                    height=height,
                    file_name=_file_name(path, root),
                    labelled=False,
                )
            )
            next_id += 1
            added += 1
        video.sort()
    if problems:
        raise DatasetError(problems, header=f"{source}: cannot add the unlisted frames of {root}")
    return out, added


def all_labels_path(train_json: Path) -> Path:
    """Where ``write_label_budget`` keeps the full labels: ``train.json`` -> ``train-all-labels.json``."""
    return train_json.with_name(f"{train_json.stem}-all-labels{train_json.suffix}")


def write_label_budget(train_json: str | Path, every: int) -> Path:
    """Keep one label in ``every`` in ``train_json`` (``sparsify``); the full labels go to
    ``<stem>-all-labels.json`` beside it, whose path is returned.

    Safe to repeat: when the full-label file exists it is the source, never an already sparse
    ``train_json`` (so a second call with another ``every`` gives that budget, not a compound one).
    Both files are written atomically; frame paths stay relative to the folder.
    """
    train_json = Path(train_json)
    full = all_labels_path(train_json)
    kept_positions(0, every)  # check the option before touching any file
    if not full.is_file():
        atomic_write_bytes(full, train_json.read_bytes())
    sparse = sparsify(read_coco_vid(full), every)
    atomic_write_json(train_json, sparse.to_coco_vid(image_root=train_json.resolve().parent))
    return full
