"""Pseudo-labels: a teacher's detections written as boxes on the frames nobody labelled.

With one labelled frame per video, the video teacher's detections on the other frames are better
labels than the image baseline's (it sees each frame's neighbours), and a student trained on them
learns what the teacher sees across frames; the soft distillation losses on the same frames did not
teach it (docs/RESULTS.md, "the teacher's pseudo-labels teach what it sees across frames"). A model
(``api.pseudo_label``) or ``v2idetr predict`` gives the detections, ``pseudo_label`` merges them: a
frame whose detections are all confident (>= ``score``) or all faint (< ``ambiguous``) becomes
labelled with the confident ones as its boxes (none: a negative); a frame with any detection in
between stays unlabelled, because a lesion the teacher is unsure of would otherwise become
background. Human labels are never changed. With ``temporal = R`` an in-between detection that a
confident box on a frame at most R frames away confirms (a human box, or a detection >= ``score``;
same class, IoU >= ``TEMPORAL_IOU``) counts as confident: the teacher is least sure on the degraded
frames where its lead lies, and a lesion does not vanish between neighbouring frames. With
``interpolate = G`` a lesion that sure boxes show on both sides of a frame (on the nearest frame
before and after it that a person labelled or that holds a sure box, each at most G away; same
class, the two boxes overlapping by IoU >= ``TEMPORAL_IOU``) gets a box there even where the teacher
missed it or was unsure, linearly interpolated between the two (an in-between detection on it keeps
its own box): the frames the teacher misses or is unsure of are mostly the degraded ones, where
a single-frame student needs the boxes most (docs/RESULTS.md, "an archive of 200 videos, with its
true labels and with the teacher's"). A person's negative frame stops the search: it says the
lesion is not there.

Every pseudo-label is marked (image ``pseudo_labelled: true``, annotation ``pseudo_label: true`` and
its ``score``, or ``interpolated: true``), so a reviewer can find them, and such a file is refused
wherever a number is reported or a checkpoint chosen (``reject_pseudo_labels``): metrics rest on
human labels only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.data.lesion_match import same_class_iou
from v2idetr.errors import ConfigError, DatasetError, Problem

# FrameRecord.extra key of a frame whose boxes came from a model, and the annotations' marker
PSEUDO_FRAME = "pseudo_labelled"
PSEUDO_BOX = "pseudo_label"
INTERPOLATED_BOX = "interpolated"  # a pseudo-label box between sure boxes on both sides, no detection of its own
DEFAULT_SCORE = 0.5
DEFAULT_AMBIGUOUS = 0.2
TEMPORAL_IOU = 0.5  # an in-between detection and a neighbour's confident box are the same lesion

# engine.inference.Predictions, restated: the data layer does not import the engine
Predictions = dict[int, dict[str, np.ndarray]]  # image_id -> boxes (x1y1x2y2 px), scores, labels
_NO_DETECTIONS = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
                  "labels": np.zeros(0, np.int64)}


@dataclass(frozen=True)
class PseudoLabelCounts:
    """What ``pseudo_label`` did, for the command's report."""

    labelled: int  # frames that got pseudo-labels (negatives included)
    negatives: int  # of those, frames without a confident detection
    boxes: int
    ambiguous: int  # frames left unlabelled: a detection between ``ambiguous`` and ``score``
    human: int  # frames labelled by people, unchanged
    confirmed: int = 0  # in-between detections kept as boxes because a neighbouring frame confirms them
    interpolated: int = 0  # boxes interpolated between sure boxes on both sides (no detection of their own)


def is_pseudo_labelled(frame: FrameRecord) -> bool:
    return bool(frame.extra.get(PSEUDO_FRAME, False))


def _check_thresholds(score: float, ambiguous: float) -> None:
    if not 0.0 < score <= 1.0:
        raise ConfigError(f"pseudo-label score = {score}: expected a detection score in (0, 1]")
    if not 0.0 <= ambiguous <= score:
        raise ConfigError(
            f"pseudo-label ambiguous = {ambiguous}: expected 0 <= ambiguous <= score ({score}); frames with a "
            "detection scored in [ambiguous, score) stay unlabelled (equal values: none do)")


def _clipped(boxes: np.ndarray, frame: FrameRecord) -> np.ndarray:
    """Boxes clipped to the frame (a detector may reach past the border)."""
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, frame.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, frame.height)
    return out


def _confident(frame: FrameRecord, predictions: Predictions, score: float) -> tuple[np.ndarray, np.ndarray]:
    """A frame's sure boxes and classes: a human's, or the model's detections >= ``score``."""
    if frame.labelled:
        return frame.boxes, frame.labels
    det = predictions.get(frame.image_id, _NO_DETECTIONS)
    keep = det["scores"] >= score
    return det["boxes"][keep], det["labels"][keep]


def _overlapping(boxes: np.ndarray, labels: np.ndarray, other: np.ndarray, other_labels: np.ndarray) -> np.ndarray:
    """For each of ``boxes``, whether one of ``other`` of the same class overlaps it by >= TEMPORAL_IOU."""
    return (same_class_iou(boxes, labels, other, other_labels) >= TEMPORAL_IOU).any(1)


def _confirmed(boxes: np.ndarray, labels: np.ndarray, sure: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Which of ``boxes`` overlap a box of the same class among ``sure`` (the neighbours') by >= TEMPORAL_IOU."""
    if not sure:
        return np.zeros(len(boxes), dtype=bool)
    return _overlapping(boxes, labels, np.concatenate([b for b, _ in sure]).reshape(-1, 4),
                        np.concatenate([np.asarray(c) for _, c in sure]))


def _bracketing(human: list[bool], sure: list[tuple[np.ndarray, np.ndarray]], i: int,
                gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and classes of the lesions that sure boxes show on both sides of frame ``i`` of a video
    (module docstring), interpolated to it; none where a side has no sure frame within ``gap``.
    ``human``: which of the video's frames a person labelled; ``sure``: each frame's sure boxes."""
    ends = []
    for step in (-1, 1):
        near = next((j for j in range(i + step, i + step * (gap + 1), step)
                     if 0 <= j < len(human) and (human[j] or len(sure[j][0]))), None)
        if near is None or not len(sure[near][0]):  # none near, or a person's negative frame
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        ends.append(near)
    (a, b), ((before, classes), (after, after_classes)) = ends, (sure[ends[0]], sure[ends[1]])
    iou = same_class_iou(before, classes, after, after_classes)
    pairs = [(p, int(iou[p].argmax())) for p in range(len(before)) if iou[p].max() >= TEMPORAL_IOU]
    w = (i - a) / (b - a)
    boxes = np.array([before[p] + (after[n] - before[p]) * w for p, n in pairs], np.float32).reshape(-1, 4)
    return boxes, np.array([classes[p] for p, _ in pairs], np.int64)


def pseudo_label(index: DatasetIndex, predictions: Predictions, score: float = DEFAULT_SCORE,
                 ambiguous: float = DEFAULT_AMBIGUOUS, source: str = "",
                 temporal: int = 0, interpolate: int = 0) -> tuple[DatasetIndex, PseudoLabelCounts]:
    """A deep copy of ``index`` whose unlabelled frames carry ``predictions`` as labels (module
    docstring); ``predictions`` holds contiguous class indices, as ``read_coco_results`` returns.
    ``source`` (the model or the detections file) is recorded in the file's ``pseudo_labels`` entry;
    ``temporal``: how many frames away a confident box may confirm an in-between detection (0: none);
    ``interpolate``: how far away the sure boxes a missed lesion is interpolated between may be (0: none)."""
    _check_thresholds(score, ambiguous)
    if temporal < 0:
        raise ConfigError(f"pseudo-label temporal = {temporal}: expected >= 0 frames (0: no neighbour confirms)")
    if interpolate < 0:
        raise ConfigError(f"pseudo-label interpolate = {interpolate}: expected >= 0 frames (0: no box interpolated)")
    out = copy.deepcopy(index)
    out.info = {**out.info, "pseudo_labels": {"source": source, "score": score, "ambiguous": ambiguous,
                                              **({"temporal": temporal} if temporal else {}),
                                              **({"interpolate": interpolate} if interpolate else {})}}
    labelled = negatives = boxes = amb = human = confirmed = interpolated = 0
    for video in out.videos:
        # the neighbours' sure boxes, read before this video's frames get pseudo-labels
        sure = [_confident(f, predictions, score) for f in video.frames] if temporal or interpolate else []
        human_frames = [f.labelled for f in video.frames]
        for i, frame in enumerate(video.frames):
            if frame.labelled:
                human += 1
                continue
            det = predictions.get(frame.image_id, _NO_DETECTIONS)
            scores = det["scores"]
            keep = scores >= score
            between = (scores >= ambiguous) & ~keep
            if temporal and between.any():
                near = sure[max(0, i - temporal):i] + sure[i + 1:i + 1 + temporal]
                backed = between & _confirmed(det["boxes"], det["labels"], near)
                keep, between = keep | backed, between & ~backed
            added, added_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
            if interpolate:
                added, added_labels = _bracketing(human_frames, sure, i, interpolate)
                added_keep = ~_overlapping(added, added_labels, det["boxes"][keep], det["labels"][keep])
                added, added_labels = added[added_keep], added_labels[added_keep]
                backed = between & _overlapping(det["boxes"], det["labels"], added, added_labels)
                keep, between = keep | backed, between & ~backed
                own = ~_overlapping(added, added_labels, det["boxes"][backed], det["labels"][backed])
                added, added_labels = added[own], added_labels[own]
            if between.any():
                amb += 1
                continue
            confirmed += int((keep & (scores < score)).sum())
            xyxy = _clipped(np.concatenate([det["boxes"][keep].reshape(-1, 4), added]), frame)
            sane = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # not flattened by the clipping
            extra = ([{PSEUDO_BOX: True, "score": round(float(s), 4)} for s in scores[keep]]
                     + [{PSEUDO_BOX: True, INTERPOLATED_BOX: True} for _ in added])
            interpolated += int(sane[int(keep.sum()):].sum())
            frame.labelled = True
            frame.boxes = xyxy[sane]
            frame.labels = np.concatenate([det["labels"][keep], added_labels])[sane].astype(np.int64)
            frame.box_extra = [e for e, ok in zip(extra, sane, strict=True) if ok]
            frame.extra[PSEUDO_FRAME] = True
            labelled += 1
            negatives += int(len(frame.boxes) == 0)
            boxes += len(frame.boxes)
    return out, PseudoLabelCounts(labelled, negatives, boxes, amb, human, confirmed, interpolated)


def reject_pseudo_labels(index: DatasetIndex, role: str) -> None:
    """``DatasetError`` naming the file and a frame when ``index`` holds pseudo-labels: ``role``
    (validation, test, evaluation) chooses checkpoints or reports numbers, which rest on human labels."""
    marked = [f for f in index.frames() if is_pseudo_labelled(f)]
    if marked:
        first = marked[0]
        raise DatasetError(
            Problem(index.source, f"image id {first.image_id} ({first.file_name or first.path})", PSEUDO_FRAME,
                    f"{len(marked)} frames carry a model's detections as labels; the {role} data must hold "
                    "human labels only: use the file before `v2idetr pseudo-label`"),
            header=f"pseudo-labels in {role} data")
