"""Evaluate per-frame detections against a dataset index: one dict, metrics.json, a PR curve, a table.

The metric definitions live in :mod:`v2idetr.engine.metrics`; this module composes them over the
whole dataset and over splits (per degradation, per video) by passing image-id sets to the same
functions, so a split can never be computed differently from the whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from v2idetr.atomic import atomic_write, atomic_write_text
from v2idetr.data.index import DatasetIndex
from v2idetr.data.pseudo_labels import reject_pseudo_labels
from v2idetr.engine.coco_eval import CocoBoxEval
from v2idetr.engine.metrics import (
    FrameMatch,
    Predictions,
    Protocol,
    match_frames,
    resolve_protocol,
    summarize_matches,
    temporal_stability,
)
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)

SPLIT_KEYS = ("AP", "AP50", "AP75", "precision", "recall", "f1", "tp", "fp", "fn", "num_detections")


def _split_metrics(
    index: DatasetIndex,
    coco_eval: CocoBoxEval,
    matches: Mapping[int, FrameMatch],
    protocol: Protocol,
    image_ids: list[int],
    with_flicker: bool,
) -> dict[str, Any]:
    """COCO AP/AP50/AP75, P/R/F1 and false alarms of a subset of frames (same functions, filtered)."""
    coco = coco_eval.evaluate(image_ids, warn_if_empty=False)
    image = summarize_matches(matches, protocol, image_ids=image_ids)
    temporal = temporal_stability(index, matches, image_ids=image_ids)
    frames = set(image_ids)
    out: dict[str, Any] = {k: ({**coco, **image})[k] for k in SPLIT_KEYS}
    out["num_frames"] = len(frames)
    out["num_gt"] = sum(matches[i].num_gt for i in frames if i in matches)
    out["false_alarms_per_1000"] = temporal["false_alarms_per_1000"]
    if with_flicker:
        out["flicker"] = temporal["flicker"]
    return out


DEGRADED = "degraded (all but none)"
# The degraded frames a single-frame detector can in principle get right (``FrameRecord.one_frame_suffices``:
# not hopeless, no look-alike drawn exactly like a lesion): where a distilled student's share of the
# teacher's degraded-frame lead is measured fairly.
DEGRADED_ONE_FRAME = "degraded, one frame suffices"
# Every labelled frame, clean or not, that one frame suffices for: the share of a teacher's all-frame
# lead a single-frame student can in principle take is measured here.
ONE_FRAME_SUFFICES = "one frame suffices"


def _degradation_groups(index: DatasetIndex) -> dict[str, list[int]]:
    """Image ids per ``FrameRecord.degradation`` value (frames without one are left out), plus
    ``DEGRADED``: every frame whose degradation is not ``none`` (where a video teacher should win),
    ``DEGRADED_ONE_FRAME``: those of them a single-frame detector can get right, and
    ``ONE_FRAME_SUFFICES``: the frames, clean or not, a single-frame detector can get right."""
    groups: dict[str, list[int]] = {}
    for frame in index.frames():
        if frame.degradation is not None:
            groups.setdefault(frame.degradation, []).append(frame.image_id)
            if frame.one_frame_suffices:
                groups.setdefault(ONE_FRAME_SUFFICES, []).append(frame.image_id)
            if frame.degradation != "none":
                groups.setdefault(DEGRADED, []).append(frame.image_id)
                if frame.one_frame_suffices:
                    groups.setdefault(DEGRADED_ONE_FRAME, []).append(frame.image_id)
    pooled = (DEGRADED, DEGRADED_ONE_FRAME, ONE_FRAME_SUFFICES)
    rank = {name: i + 1 for i, name in enumerate(pooled)}  # after the single types, in this order
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "none", rank.get(kv[0], 0), kv[0])))


def _video_groups(index: DatasetIndex) -> dict[str, list[int]]:
    names = [v.name for v in index.videos]
    groups: dict[str, list[int]] = {}
    for video in index.videos:
        key = video.name if names.count(video.name) == 1 else f"{video.name} (id {video.video_id})"
        groups[key] = [f.image_id for f in video.frames]
    return groups


def evaluate(
    index: DatasetIndex,
    predictions: Predictions,
    protocol: str = "yona",
    score_thresh: float | None = None,
    nms_iou: float | None = None,
    out_dir: str | Path | None = None,
    name: str = "model",
) -> dict[str, Any]:
    """COCO AP (all frames), image-level P/R/F1 (named protocol), temporal stability and splits.

    ``predictions``: ``{image_id: {"boxes": [K, 4] x1y1x2y2 pixels, "scores": [K], "labels": [K]}}``
    with contiguous labels; frames without an entry have no detection. Top-level keys: AP, AP50,
    AP75, AP_small, AP_medium, AP_large, AR100, precision, recall, f1, tp, fp, fn, num_detections,
    protocol, score_thresh, nms_iou, flicker, flicker_pairs, false_alarms_per_1000, num_frames,
    num_gt, num_negative_frames, num_unlabelled_left_out, by_degradation, by_video, pr_curve, name.
    Undefined values (no ground truth, 0/0) are None. Unlabelled frames (``FrameRecord.labelled``
    False) are left out of every number, and counted. With ``out_dir``: writes metrics.json
    (atomically) and pr_curve.png (when there is ground truth).
    """
    reject_pseudo_labels(index, "evaluation")
    left_out = index.num_unlabelled_frames
    if left_out:
        index = index.labelled_only()
        log.info("%s: scoring the %d labelled frames, leaving out %d unlabelled ones", index.source or "dataset",
                 index.num_frames, left_out)
        if index.num_frames == 0:
            raise DatasetError(Problem(index.source, "", "images", "every frame is unlabelled ('labelled': false): "
                                       "nothing to score"), header="cannot evaluate")
    spec = resolve_protocol(protocol, score_thresh, nms_iou)
    matches = match_frames(index, predictions, spec)
    coco_eval = CocoBoxEval(index, predictions)
    coco = coco_eval.evaluate()
    pr_curve = coco.pop("pr_curve")
    image = summarize_matches(matches, spec)
    temporal = temporal_stability(index, matches)

    metrics: dict[str, Any] = {"name": name, **coco}
    for key in ("precision", "recall", "f1", "tp", "fp", "fn", "num_detections",
                "protocol", "score_thresh", "nms_iou"):
        metrics[key] = image[key]
    for key in ("flicker", "flicker_pairs", "false_alarms_per_1000"):
        metrics[key] = temporal[key]
    metrics["num_frames"] = index.num_frames
    metrics["num_gt"] = index.num_boxes
    metrics["num_negative_frames"] = index.num_negative_frames
    metrics["num_unlabelled_left_out"] = left_out
    metrics["by_degradation"] = {
        k: _split_metrics(index, coco_eval, matches, spec, ids, with_flicker=False)
        for k, ids in _degradation_groups(index).items()
    }
    metrics["by_video"] = {
        k: _split_metrics(index, coco_eval, matches, spec, ids, with_flicker=True)
        for k, ids in _video_groups(index).items()
    }
    metrics["pr_curve"] = pr_curve

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_metrics_json(metrics, out / "metrics.json")
        if pr_curve is not None:
            plot_pr_curves(
                {name: (pr_curve["recall"], pr_curve["precision"])}, out / "pr_curve.png",
                ap50={name: metrics["AP50"]},
            )
        else:
            log.info("no ground truth: %s/pr_curve.png not written", out)
        log.info("wrote %s", out / "metrics.json")
    return metrics


def write_metrics_json(metrics: Mapping[str, Any], path: str | Path) -> None:
    """metrics.json (atomically); NaN is refused so every value is valid JSON."""
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def plot_pr_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_png: str | Path,
    ap50: Mapping[str, float | None] | None = None,
    title: str = "Precision-recall at IoU 0.5",
) -> None:
    """One PNG with a precision-vs-recall line per model (``curves[name] = (recall, precision)``).

    The legend shows each model's AP50: ``ap50[name]`` when given, else the mean precision of the
    curve, which equals COCO's AP50 for its 101-point interpolated curve.
    """
    fig = Figure(figsize=(5, 4.5), dpi=100)
    ax = fig.subplots()
    for name, (recall, precision) in curves.items():
        value = (ap50 or {}).get(name)
        if value is None:
            value = float(np.mean(precision)) if len(precision) else 0.0
        ax.plot(recall, precision, drawstyle="steps-post", label=f"{name} (AP50 {value:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_write(out_png, lambda p: fig.savefig(p, format="png"))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _split_rows(title: str, splits: Mapping[str, Mapping[str, Any]], max_rows: int) -> list[str]:
    cols = ("num_frames", "num_gt", "AP", "AP50", "precision", "recall", "f1", "false_alarms_per_1000")
    heads = ("frames", "gt", "AP", "AP50", "P", "R", "F1", "FA/1000")
    width = max([len(title)] + [len(k) for k in splits])
    lines = [f"{title:<{width}}  " + "  ".join(f"{h:>7}" for h in heads)]
    for i, (key, row) in enumerate(splits.items()):
        if i == max_rows:
            lines.append(f"... {len(splits) - max_rows} more in metrics.json")
            break
        lines.append(f"{key:<{width}}  " + "  ".join(f"{_fmt(row.get(c)):>7}" for c in cols))
    return lines


def format_metrics_table(metrics: Mapping[str, Any], max_videos: int = 20) -> str:
    """A readable summary of :func:`evaluate`'s dict: COCO AP, the image-level protocol with its
    thresholds, temporal stability and the splits (fractions with 3 decimals, ``n/a`` if undefined)."""
    m = metrics
    nms = "none" if m.get("nms_iou") is None else f"{m['nms_iou']:.2f}"
    lines = [
        f"{m.get('name', 'model')}: {m.get('num_frames')} frames ({m.get('num_negative_frames', 'n/a')} "
        f"lesion-free), {m.get('num_gt')} ground-truth boxes"
        + (f"; {m['num_unlabelled_left_out']} unlabelled frames left out" if m.get("num_unlabelled_left_out") else ""),
        "COCO box:    " + "  ".join(
            f"{label} {_fmt(m.get(key))}" for label, key in (
                ("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("APs", "AP_small"),
                ("APm", "AP_medium"), ("APl", "AP_large"), ("AR100", "AR100"))
        ),
        f"Image-level: protocol {m.get('protocol')} (score >= {_fmt(m.get('score_thresh'))}, NMS IoU {nms})",
        f"             precision {_fmt(m.get('precision'))}  recall {_fmt(m.get('recall'))}  "
        f"F1 {_fmt(m.get('f1'))}  (TP {m.get('tp')}, FP {m.get('fp')}, FN {m.get('fn')}, "
        f"detections {m.get('num_detections')})",
        f"Temporal:    flicker {_fmt(m.get('flicker'))} ({m.get('flicker_pairs', 0)} frame pairs)  "
        f"false alarms {_fmt(m.get('false_alarms_per_1000'))} per 1000 lesion-free frames",
    ]
    if m.get("by_degradation"):
        lines += ["", *_split_rows("degradation", m["by_degradation"], max_rows=10**6)]
    if m.get("by_video"):
        lines += ["", *_split_rows("video", m["by_video"], max_rows=max_videos)]
    return "\n".join(lines)
