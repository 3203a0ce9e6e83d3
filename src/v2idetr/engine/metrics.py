"""Pure metric functions: the published image-level protocols (DESIGN section 5) and flicker; COCO
box AP is in :mod:`v2idetr.engine.coco_eval`.

Inputs everywhere
- Ground truth: a :class:`~v2idetr.data.index.DatasetIndex` (boxes ``x1, y1, x2, y2`` pixels of the
  original frame, contiguous labels, original ids in ``category_ids``).
- Predictions: ``{image_id: {"boxes": [K, 4] x1y1x2y2 pixels, "scores": [K], "labels": [K]}}``
  (the post-processor's output). A frame missing from the predictions has no detection;
  predictions for frames outside the index (or outside ``image_ids``) are ignored, which is how
  every split is evaluated: the same function on a set of image ids.

Image-level protocols (class-agnostic, as published: a lesion is a lesion)
- ``yona`` (YONA, MICCAI 2023; default): score >= 0.3, class-agnostic NMS at IoU 0.3; a detection
  is a TP if its IoU with *any* ground-truth box of its frame is > 0.5. TP counts detections, so
  two detections on one box are two TPs *as published*: precision = TP / detections,
  recall = TP / ground-truth boxes (can exceed 1 with surviving duplicates; a warning is logged),
  F1 = 2 TP / (detections + ground truths). Lesion-free frames are not scored.
- ``strict``: as ``yona`` but one-to-one greedy matching in descending score (a ground-truth box
  is hit at most once, by its highest-IoU free partner) and lesion-free frames are scored (each
  detection there is a FP). precision = TP / detections, recall = TP / GT, F1 = 2PR / (P + R).
- ``stft`` (STFT, MICCAI 2021, its public localisation evaluation): score >= 0.6, no NMS; a
  detection "hits" a ground-truth box when its centre lies strictly inside it. As in the published
  code, TP counts *ground-truth boxes* hit by at least one detection centre, FP counts detections
  whose centre lies in no ground-truth box, FN = GT - TP; precision = TP / (TP + FP),
  recall = TP / GT, F1 = 2PR / (P + R). Duplicates on one box are thus neither rewarded nor
  penalised (so precision is not TP / detections when duplicates exist). Lesion-free frames are
  not scored. (The published code subtracts the number of (detection, box) centre hits from the
  detection count, which differs from ours only when ground-truth boxes overlap.)

Fractions whose denominator is zero (0/0) are ``None``, never 0 or NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou, nms

from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.errors import ConfigError

log = logging.getLogger(__name__)

Predictions = Mapping[int, Mapping[str, Any]]


@dataclass(frozen=True)
class Protocol:
    """One image-level protocol with the thresholds actually used.

    ``rule``: ``"iou_any"`` (any GT with IoU > ``iou_thresh``), ``"iou_one_to_one"`` (greedy by
    score) or ``"centre"`` (detection centre strictly inside a GT box). ``count_gt_hits``: TP counts
    ground-truth boxes hit (STFT) instead of correct detections. ``nms_iou`` None: no NMS.
    """

    name: str
    score_thresh: float
    nms_iou: float | None
    rule: str
    score_negatives: bool
    count_gt_hits: bool = False
    iou_thresh: float = 0.5


PROTOCOLS: dict[str, Protocol] = {
    "yona": Protocol("yona", score_thresh=0.3, nms_iou=0.3, rule="iou_any", score_negatives=False),
    "strict": Protocol("strict", score_thresh=0.3, nms_iou=0.3, rule="iou_one_to_one", score_negatives=True),
    "stft": Protocol("stft", score_thresh=0.6, nms_iou=None, rule="centre", score_negatives=False,
                     count_gt_hits=True),
}


def resolve_protocol(
    protocol: str | Protocol = "yona", score_thresh: float | None = None, nms_iou: float | None = None
) -> Protocol:
    """The named protocol with ``score_thresh`` / ``nms_iou`` overriding its defaults when given.

    ``nms_iou=1.0`` effectively disables NMS (no two boxes overlap by more than IoU 1).
    """
    if isinstance(protocol, Protocol):
        spec = protocol
    elif protocol in PROTOCOLS:
        spec = PROTOCOLS[protocol]
    else:
        raise ConfigError(
            f"eval.protocol: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
        )
    if score_thresh is not None:
        if not 0.0 <= float(score_thresh) <= 1.0:
            raise ConfigError(f"eval.score_thresh: expected a score in [0, 1], got {score_thresh}")
        spec = replace(spec, score_thresh=float(score_thresh))
    if nms_iou is not None:
        if not 0.0 <= float(nms_iou) <= 1.0:
            raise ConfigError(f"eval.nms_iou: expected an IoU in [0, 1], got {nms_iou}")
        spec = replace(spec, nms_iou=float(nms_iou))
    return spec


def as_detections(image_id: int, det: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``boxes [K, 4]`` float64, ``scores [K]`` float64, ``labels [K]`` int64 of one frame."""
    if det is None:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), dtype=np.int64)
    boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(det["scores"], dtype=np.float64).reshape(-1)
    labels = np.asarray(det["labels"], dtype=np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"predictions for image_id {image_id}: boxes ({len(boxes)}), scores ({len(scores)}) and "
            f"labels ({len(labels)}) must have the same length"
        )
    return boxes, scores, labels


def select_detections(
    boxes: np.ndarray, scores: np.ndarray, score_thresh: float, nms_iou: float | None
) -> np.ndarray:
    """Indices of the detections a protocol keeps, by descending score: ``score >= score_thresh``,
    then class-agnostic NMS (torchvision) when ``nms_iou`` is set. ``boxes [K, 4]`` x1y1x2y2 pixels."""
    candidates = np.flatnonzero(scores >= score_thresh)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
    if nms_iou is not None and len(candidates) > 1:
        kept = nms(
            torch.as_tensor(boxes[candidates], dtype=torch.float64),
            torch.as_tensor(scores[candidates], dtype=torch.float64),
            float(nms_iou),
        ).numpy()
        kept.sort()  # positions in the score-sorted list: ascending = descending score, ties stable
        candidates = candidates[kept]
    return candidates


def filter_detections(
    boxes: np.ndarray, scores: np.ndarray, score_thresh: float, nms_iou: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes and scores ``select_detections`` keeps, sorted by descending score."""
    keep = select_detections(boxes, scores, score_thresh, nms_iou)
    return boxes[keep], scores[keep]


def centres_inside(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """``bool [K, N]``: the centre of detection k lies strictly inside ground-truth box n."""
    cx = (det_boxes[:, 0] + det_boxes[:, 2])[:, None] / 2
    cy = (det_boxes[:, 1] + det_boxes[:, 3])[:, None] / 2
    g = gt_boxes[None]
    return (cx > g[..., 0]) & (cx < g[..., 2]) & (cy > g[..., 1]) & (cy < g[..., 3])


@dataclass(frozen=True)
class FrameMatch:
    """The outcome of one frame under one protocol.

    ``det_tp bool [K]``: kept detection k is correct under the protocol's rule;
    ``gt_hit bool [N]``: ground-truth box n is found under the rule. ``K`` counts detections after
    the score threshold and NMS.
    """

    image_id: int
    det_tp: np.ndarray
    gt_hit: np.ndarray

    @property
    def num_det(self) -> int:
        return len(self.det_tp)

    @property
    def num_gt(self) -> int:
        return len(self.gt_hit)

    @property
    def is_negative(self) -> bool:
        return self.num_gt == 0


def match_frame(
    image_id: int, det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, protocol: Protocol
) -> FrameMatch:
    """Apply the protocol's threshold, NMS and TP rule to one frame (boxes x1y1x2y2 pixels)."""
    boxes, _ = filter_detections(det_boxes, det_scores, protocol.score_thresh, protocol.nms_iou)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    k, n = len(boxes), len(gt)
    if k == 0 or n == 0:
        return FrameMatch(image_id, np.zeros(k, dtype=bool), np.zeros(n, dtype=bool))
    if protocol.rule == "centre":
        hits = centres_inside(boxes, gt)
        return FrameMatch(image_id, hits.any(axis=1), hits.any(axis=0))
    iou = box_iou(torch.as_tensor(boxes), torch.as_tensor(gt)).numpy()
    if protocol.rule == "iou_any":
        hits = iou > protocol.iou_thresh
        return FrameMatch(image_id, hits.any(axis=1), hits.any(axis=0))
    if protocol.rule == "iou_one_to_one":
        det_tp, gt_hit = np.zeros(k, dtype=bool), np.zeros(n, dtype=bool)
        for d in range(k):  # boxes are in descending score order
            cand = np.where(gt_hit, -1.0, iou[d])
            g = int(np.argmax(cand))
            if cand[g] > protocol.iou_thresh:
                det_tp[d], gt_hit[g] = True, True
        return FrameMatch(image_id, det_tp, gt_hit)
    raise ValueError(f"unknown matching rule {protocol.rule!r}")


def _selected_frames(index: DatasetIndex, image_ids: Collection[int] | None) -> list[FrameRecord]:
    if image_ids is None:
        return list(index.frames())
    wanted = set(image_ids)
    return [f for f in index.frames() if f.image_id in wanted]


def match_frames(
    index: DatasetIndex,
    predictions: Predictions,
    protocol: Protocol,
    image_ids: Collection[int] | None = None,
) -> dict[int, FrameMatch]:
    """:func:`match_frame` for every frame of the index (or of ``image_ids``), keyed by image id."""
    out: dict[int, FrameMatch] = {}
    for frame in _selected_frames(index, image_ids):
        boxes, scores, _ = as_detections(frame.image_id, predictions.get(frame.image_id))
        out[frame.image_id] = match_frame(frame.image_id, boxes, scores, frame.boxes, protocol)
    return out


def _fraction(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def summarize_matches(
    matches: Mapping[int, FrameMatch], protocol: Protocol, image_ids: Collection[int] | None = None
) -> dict[str, Any]:
    """Precision / recall / F1 and counts over the matched frames (or the subset ``image_ids``).

    ``num_detections`` counts kept detections on the scored frames; ``fn`` counts ground-truth
    boxes not found. See the module docstring for what TP and FP mean in each protocol.
    """
    ids = matches.keys() if image_ids is None else [i for i in image_ids if i in matches]
    tp = fp = fn = num_det = num_gt = frames = 0
    for i in ids:
        m = matches[i]
        if m.is_negative and not protocol.score_negatives:
            continue
        frames += 1
        num_det += m.num_det
        num_gt += m.num_gt
        hit = int(m.gt_hit.sum())
        fn += m.num_gt - hit
        if protocol.count_gt_hits:
            tp += hit
            fp += int((~m.det_tp).sum())
        else:
            correct = int(m.det_tp.sum())
            tp += correct
            fp += m.num_det - correct
    p_den = tp + fp if protocol.count_gt_hits else num_det
    recall = _fraction(tp, num_gt)
    if recall is not None and recall > 1.0:
        log.warning(
            "protocol %s: recall %.3f > 1 because TP counts duplicate detections on one lesion as "
            "published; use protocol=strict for one-to-one matching", protocol.name, recall,
        )
    return {
        "protocol": protocol.name,
        "score_thresh": protocol.score_thresh,
        "nms_iou": protocol.nms_iou,
        "precision": _fraction(tp, p_den),
        "recall": recall,
        "f1": _fraction(2 * tp, p_den + num_gt),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "num_detections": num_det,
        "num_gt": num_gt,
        "num_scored_frames": frames,
    }


def image_level_metrics(
    index: DatasetIndex,
    predictions: Predictions,
    protocol: str | Protocol = "yona",
    score_thresh: float | None = None,
    nms_iou: float | None = None,
    image_ids: Collection[int] | None = None,
) -> dict[str, Any]:
    """Image-level precision / recall / F1 under a named protocol (see the module docstring).

    Returns precision, recall, f1 (None for 0/0), tp, fp, fn, num_detections, num_gt,
    num_scored_frames, and the protocol, score_thresh and nms_iou actually used.
    """
    spec = resolve_protocol(protocol, score_thresh, nms_iou)
    return summarize_matches(match_frames(index, predictions, spec, image_ids), spec)


def temporal_stability(
    index: DatasetIndex, matches: Mapping[int, FrameMatch], image_ids: Collection[int] | None = None
) -> dict[str, Any]:
    """Flicker and false alarms from per-frame matches (frame order from the index).

    flicker: over pairs of neighbouring frames of a video (neighbours in the index's frame order,
    i.e. consecutive *annotated* frames) in which the same lesion is annotated in both, the
    fraction where it is found (the protocol's ``gt_hit``) in one and missed in the other. Lesions
    are paired by ``box_extra[j]["instance_id"]`` when every box of both frames has one; otherwise
    the lesion is the frame's "has a lesion" state, found when any of its boxes is found.
    false_alarms_per_1000: detections kept by the protocol's threshold and NMS on lesion-free
    frames, per 1000 such frames (whether or not the protocol scores those frames).
    """
    wanted = None if image_ids is None else set(image_ids)
    pairs = flips = negatives = alarms = 0
    for video in index.videos:
        frames = [f for f in video.frames if f.image_id in matches and (wanted is None or f.image_id in wanted)]
        for frame in frames:
            if frame.is_negative:
                negatives += 1
                alarms += matches[frame.image_id].num_det
        for a, b in pairwise(frames):
            if a.is_negative or b.is_negative:
                continue
            hit_a, hit_b = matches[a.image_id].gt_hit, matches[b.image_id].gt_hit
            ids_a, ids_b = _instance_ids(a), _instance_ids(b)
            if ids_a is not None and ids_b is not None:
                found_b = dict(zip(ids_b, hit_b, strict=True))
                for inst, found in zip(ids_a, hit_a, strict=True):
                    if inst in found_b:
                        pairs += 1
                        flips += bool(found) != bool(found_b[inst])
            else:
                pairs += 1
                flips += bool(hit_a.any()) != bool(hit_b.any())
    return {
        "flicker": _fraction(flips, pairs),
        "flicker_pairs": pairs,
        "flicker_flips": flips,
        "false_alarms_per_1000": None if negatives == 0 else 1000.0 * alarms / negatives,
        "num_negative_frames": negatives,
        "negative_detections": alarms,
    }


def _instance_ids(frame: FrameRecord) -> list[Any] | None:
    """The frame's per-box ``instance_id`` values, or None unless every box has one."""
    if len(frame.box_extra) < len(frame.boxes):
        return None
    ids = [frame.box_extra[j].get("instance_id") for j in range(len(frame.boxes))]
    return None if any(i is None for i in ids) else ids
