"""The one in-memory dataset index: videos -> ordered frames -> boxes and labels.

Every reader (COCO-VID, BUV, SUN, image folders, video files) produces a `DatasetIndex`;
everything downstream (clips, training, evaluation, conversion) consumes only this.

Conventions
- Boxes are float32 ``[N, 4]`` arrays of ``x1, y1, x2, y2`` in pixels of the original frame.
- Labels are int64 ``[N]`` *contiguous* class indices ``0..C-1`` into ``class_names``; the
  original category ids are kept in ``category_ids`` so that results can be written back with
  the user's ids (``category_ids[label]``).
- Frames without boxes are negatives and are always kept. A frame may also be *unlabelled*
  (``FrameRecord.labelled`` False: nobody boxed it), which is not a negative: it never enters a
  detection loss, a metric or a threshold choice, only clips (as a support frame) and
  distillation (as a key frame the teacher labels softly).
- Unknown fields of the source records are kept in ``extra`` (per frame / video) and
  ``box_extra`` (per box), so a converted dataset loses nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def empty_labels() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


@dataclass
class FrameRecord:
    """One frame of one video.

    ``path`` is the resolved location of the image file; for frames that live inside a video
    container it is the container's path and ``container_index`` is the decoded frame number.
    """

    image_id: int
    video_id: int
    frame_id: int
    path: Path
    width: int
    height: int
    file_name: str = ""
    boxes: np.ndarray = field(default_factory=empty_boxes)
    labels: np.ndarray = field(default_factory=empty_labels)
    box_extra: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    container_index: int | None = None
    labelled: bool = True  # False: nobody looked at this frame (not a negative; COCO-VID ``labelled: false``)

    @property
    def is_negative(self) -> bool:
        """A labelled frame without lesions (an unlabelled frame is never a negative)."""
        return self.labelled and len(self.boxes) == 0

    @property
    def degradation(self) -> str | None:
        """Synthetic datasets record each frame's degradation here (``"none"`` when clean)."""
        value = self.extra.get("degradation")
        return None if value is None else str(value)

    @property
    def lesion_in_view(self) -> bool:
        """False on a frame whose annotated lesions left no trace in its pixels (the synthetic
        ``hopeless`` degradation, ``lesion_visible: false``): only temporal context can find them."""
        return self.is_negative or bool(self.extra.get("lesion_visible", True))

    @property
    def one_frame_suffices(self) -> bool:
        """False where this frame alone cannot be got right: its lesion left no trace
        (`lesion_in_view`), or it holds an unannotated look-alike (``distractor_bbox``) drawn exactly
        like a lesion, which only its absence from the neighbouring frames gives away. Synthetic data
        from generator 1.1 on marks look-alikes with a cue of their own (``distractor_cue``): one
        frame can reject those."""
        cueless_look_alike = "distractor_bbox" in self.extra and not self.extra.get("distractor_cue", False)
        return self.lesion_in_view and not cueless_look_alike


@dataclass
class VideoRecord:
    """An ordered sequence of frames (sorted by ``frame_id``)."""

    video_id: int
    name: str
    frames: list[FrameRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def sort(self) -> None:
        self.frames.sort(key=lambda f: f.frame_id)


@dataclass
class DatasetIndex:
    """All videos of a dataset with their labelled frames."""

    videos: list[VideoRecord]
    class_names: list[str]
    category_ids: list[int]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.category_ids):
            raise ValueError("class_names and category_ids must have the same length")
        for video in self.videos:
            video.sort()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def frames(self) -> Iterator[FrameRecord]:
        for video in self.videos:
            yield from video.frames

    @property
    def num_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos)

    @property
    def num_boxes(self) -> int:
        return sum(len(f.boxes) for f in self.frames())

    @property
    def num_negative_frames(self) -> int:
        return sum(1 for f in self.frames() if f.is_negative)

    @property
    def num_unlabelled_frames(self) -> int:
        return sum(1 for f in self.frames() if not f.labelled)

    def labelled_only(self) -> DatasetIndex:
        """The same index without its unlabelled frames (videos left without frames dropped); the
        frame records are shared, not copied. ``self`` when every frame is labelled."""
        if self.num_unlabelled_frames == 0:
            return self
        videos = []
        for video in self.videos:
            frames = [f for f in video.frames if f.labelled]
            if frames:
                videos.append(VideoRecord(video.video_id, video.name, frames, video.extra))
        return DatasetIndex(videos=videos, class_names=list(self.class_names), category_ids=list(self.category_ids),
                            source=self.source, info=self.info, skipped=self.skipped)

    def frame_by_image_id(self) -> dict[int, FrameRecord]:
        return {f.image_id: f for f in self.frames()}

    def video_by_id(self) -> dict[int, VideoRecord]:
        return {v.video_id: v for v in self.videos}

    def subset(self, video_ids: set[int] | list[int]) -> DatasetIndex:
        """A new index holding only the given videos (deep-copied, same classes)."""
        keep = set(video_ids)
        return DatasetIndex(
            videos=[copy.deepcopy(v) for v in self.videos if v.video_id in keep],
            class_names=list(self.class_names),
            category_ids=list(self.category_ids),
            source=self.source,
            info=dict(self.info),
        )

    def to_coco_vid(self, image_root: Path | None = None) -> dict[str, Any]:
        """Serialise to a COCO-VID dict. ``file_name`` is made relative to ``image_root`` if given.

        Annotation ids are renumbered from 1; image/video/category ids are kept.
        """
        videos, images, annotations = [], [], []
        ann_id = 1
        for video in self.videos:
            videos.append({**video.extra, "id": video.video_id, "name": video.name})
            for frame in video.frames:
                name = frame.file_name or str(frame.path)
                if image_root is not None and frame.container_index is None:
                    try:
                        name = Path(frame.path).resolve().relative_to(Path(image_root).resolve()).as_posix()
                    except ValueError:
                        name = str(Path(frame.path).resolve())
                images.append(
                    {
                        **frame.extra,
                        "id": frame.image_id,
                        "file_name": name,
                        "video_id": frame.video_id,
                        "frame_id": frame.frame_id,
                        "width": frame.width,
                        "height": frame.height,
                        **({} if frame.labelled else {"labelled": False}),
                    }
                )
                for j, (box, label) in enumerate(zip(frame.boxes, frame.labels, strict=True)):
                    x1, y1, x2, y2 = (float(v) for v in box)
                    extra = frame.box_extra[j] if j < len(frame.box_extra) else {}
                    extra = {k: v for k, v in extra.items() if k != "id"}
                    annotations.append(
                        {
                            **extra,
                            "id": ann_id,
                            "image_id": frame.image_id,
                            "category_id": self.category_ids[int(label)],
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1),
                            "iscrowd": int(extra.get("iscrowd", 0)),
                        }
                    )
                    ann_id += 1
        categories = [
            {"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names, strict=True)
        ]
        return {
            **self.info,
            "videos": videos,
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
