"""Several datasets as one training file: the labelled videos beside an archive someone (or a teacher)
labelled later, so that one ``data.train`` holds them all.

A careless merge is easy to miss and costly: the same video twice is trained on twice as often, and
two files whose classes differ in order would swap the labels. So the classes must agree, by name
and order; a video name or a frame file that two files share is an error naming both; image and
video ids are renumbered (each file numbers its own from 1); a file's pseudo-labels stay marked.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from v2idetr.data.index import DatasetIndex, VideoRecord
from v2idetr.errors import ConfigError, DatasetError, Problem


def _frame_key(path: Path, container_index: int | None) -> tuple[str, int | None]:
    return str(Path(path).resolve()), container_index


def merge_indexes(indexes: Sequence[DatasetIndex]) -> DatasetIndex:
    """One index holding every video of ``indexes``, in order, with new image and video ids (module
    docstring). ``DatasetError`` naming the files when the classes differ or a video or frame repeats."""
    if len(indexes) < 2:
        raise ConfigError(f"merge: {len(indexes)} dataset(s) given, expected two or more")
    first = indexes[0]
    videos: list[VideoRecord] = []
    video_names: dict[str, str] = {}
    frame_files: dict[tuple[str, int | None], str] = {}
    next_image_id = 1
    for index in indexes:
        if list(index.class_names) != list(first.class_names):
            raise DatasetError(
                Problem(index.source, "", "categories",
                        f"classes {index.class_names}, expected {first.class_names} (as in {first.source}, by name "
                        "and order: a class's index is its label)"),
                header="cannot merge datasets with different classes")
        for video in index.videos:
            if video.name in video_names:
                raise DatasetError(
                    Problem(index.source, f"video {video.name!r}", "videos[].name",
                            f"also in {video_names[video.name]}: a video in two files would be trained on twice; "
                            "rename one (each video's name must be unique)"),
                    header="cannot merge datasets that share a video")
            video_names[video.name] = index.source
            merged = VideoRecord(len(videos) + 1, video.name, [], copy.deepcopy(video.extra))
            for frame in video.frames:
                key = _frame_key(frame.path, frame.container_index)
                if key in frame_files:
                    raise DatasetError(
                        Problem(index.source, f"video {video.name!r}, frame {frame.file_name or frame.path}",
                                "images[].file_name",
                                f"the same frame file is in {frame_files[key]}: a frame may be listed once"),
                        header="cannot merge datasets that share a frame")
                frame_files[key] = index.source
                frame = copy.deepcopy(frame)
                frame.image_id, frame.video_id = next_image_id, merged.video_id
                next_image_id += 1
                merged.frames.append(frame)
            videos.append(merged)
    info = copy.deepcopy(first.info)
    pseudo = [index.info["pseudo_labels"] for index in indexes if "pseudo_labels" in index.info]
    info.pop("pseudo_labels", None)
    if pseudo:
        info["pseudo_labels"] = pseudo[0] if len(pseudo) == 1 else pseudo
    info["merged_from"] = [index.source for index in indexes]
    return DatasetIndex(videos=videos, class_names=list(first.class_names), category_ids=list(first.category_ids),
                        source=" + ".join(index.source for index in indexes), info=info)
