"""COCO box AP (faster-coco-eval) over a :class:`~v2idetr.data.index.DatasetIndex` and predictions in
the post-processor's format (:mod:`v2idetr.engine.metrics` describes both): AP, AP50, AP75, by size,
AR100 and the precision-recall curve at IoU 0.5. The conversion to COCO's format is done once per
model, so each split of the test set (all, degraded, one frame suffices) only re-runs the evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from v2idetr.data.index import DatasetIndex
from v2idetr.engine.metrics import Predictions, as_detections

log = logging.getLogger(__name__)

COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")
# Positions of the keys above in faster_coco_eval's bbox ``stats`` (AR@1 and AR@10 are skipped).
_COCO_STATS_INDEX = (0, 1, 2, 3, 4, 5, 8)


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    """``[K, 4]`` x1y1x2y2 pixels -> COCO ``[x, y, w, h]`` pixel lists."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 2:] -= out[:, :2]
    return out.tolist()


class CocoBoxEval:
    """COCO box evaluation with the conversion done once, so splits only re-run the evaluation.

    The ground truth is built in memory from the index (original category ids, ``bbox`` as
    ``x, y, w, h`` pixels, ``iscrowd`` 0, annotation ids from 1 because COCO eval reads id 0 as
    "unmatched"); detections are mapped back to the original category ids.
    """

    def __init__(self, index: DatasetIndex, predictions: Predictions) -> None:
        cat_ids = np.asarray(index.category_ids, dtype=np.int64)
        images, annotations, results = [], [], []
        self.num_gt: dict[int, int] = {}
        for frame in index.frames():
            image_id = int(frame.image_id)
            images.append({"id": image_id, "width": int(frame.width), "height": int(frame.height)})
            self.num_gt[image_id] = len(frame.boxes)
            for bbox, cat in zip(_xywh(frame.boxes), cat_ids[frame.labels].tolist(), strict=True):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                    "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0,
                })
            boxes, scores, labels = as_detections(image_id, predictions.get(image_id))
            if len(labels) and (labels.min() < 0 or labels.max() >= len(cat_ids)):
                raise ValueError(
                    f"predictions for image_id {image_id}: labels must lie in [0, {len(cat_ids)}) "
                    f"(the dataset's classes), got {sorted(set(labels.tolist()))}"
                )
            results += [
                {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}
                for bbox, score, cat in zip(_xywh(boxes), scores.tolist(), cat_ids[labels].tolist(), strict=True)
            ]
        categories = [
            {"id": int(cid), "name": name} for cid, name in zip(index.category_ids, index.class_names, strict=True)
        ]
        quiet = log.debug
        self.coco_gt = COCO({"images": images, "annotations": annotations, "categories": categories},
                            print_function=quiet)
        self.coco_dt = self.coco_gt.loadRes(results)
        self.coco_dt.print_function = quiet

    def evaluate(self, image_ids: Collection[int] | None = None, warn_if_empty: bool = True) -> dict[str, Any]:
        """AP, AP50, AP75, AP_small/medium/large, AR100 and ``pr_curve`` over ``image_ids`` (all if None).

        A value COCO reports as -1 (no ground truth in that size range) is None; with no
        ground-truth box at all every value is None. ``pr_curve``: ``{"recall": [101],
        "precision": [101]}`` at IoU 0.5, all areas, 100 detections, averaged over the categories
        that have ground truth.
        """
        ids = sorted(self.num_gt) if image_ids is None else sorted(i for i in set(image_ids) if i in self.num_gt)
        if sum(self.num_gt[i] for i in ids) == 0:
            if warn_if_empty:
                log.warning("no ground-truth boxes among %d frames: COCO AP is undefined (None)", len(ids))
            return {**dict.fromkeys(COCO_KEYS), "pr_curve": None}
        evaluator = COCOeval_faster(self.coco_gt, self.coco_dt, "bbox", print_function=log.debug)
        evaluator.params.imgIds = ids  # never empty here: an empty list would mean "all images"
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        out: dict[str, Any] = {}
        for key, pos in zip(COCO_KEYS, _COCO_STATS_INDEX, strict=True):
            value = float(evaluator.stats[pos])
            out[key] = None if value < 0 else value
        out["pr_curve"] = _pr_curve(evaluator)
        return out


def coco_metrics(
    index: DatasetIndex,
    predictions: Predictions,
    image_ids: Collection[int] | None = None,
    warn_if_empty: bool = True,
) -> dict[str, Any]:
    """COCO box AP, AP50, AP75, AP_small/medium/large, AR100 (faster-coco-eval) and ``pr_curve``.

    Over all frames of the index, or of ``image_ids``: lesion-free frames are included (their
    detections are false positives). See :meth:`CocoBoxEval.evaluate` for None values.
    """
    return CocoBoxEval(index, predictions).evaluate(image_ids, warn_if_empty)


def _pr_curve(evaluator: COCOeval_faster) -> dict[str, list[float]] | None:
    """Interpolated precision at COCO's 101 recall points, IoU 0.5, area "all", last maxDets."""
    params = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    precision = np.asarray(evaluator.eval["precision"])[t, :, :, 0, -1]  # [R, K]
    valid = (precision > -1).all(axis=0)
    if not valid.any():
        return None
    return {
        "recall": [float(r) for r in params.recThrs],
        "precision": [float(p) for p in precision[:, valid].mean(axis=1)],
    }
