"""Reading COCO result files (``[{image_id, category_id, bbox, score}, ...]``) as evaluator predictions.

``v2idetr predict`` writes them, and so do other detectors; ``v2idetr eval --predictions`` scores
them against a dataset. Every record is checked, and every problem names the file, the record and
the field, because a result file for the wrong dataset otherwise scores as a silent zero.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from v2idetr.data.index import DatasetIndex
from v2idetr.engine.inference import Predictions
from v2idetr.errors import DatasetError, Problem

MAX_REPORTED = 50


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_record(rec: Any, n: int, file: str, frames: set[int], categories: dict[int, int]) -> list[Problem]:
    where = f"record {n}"
    if not isinstance(rec, dict):
        return [Problem(file, where, "", f"expected an object, got {type(rec).__name__}")]
    problems = []
    image_id = rec.get("image_id")
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        problems.append(Problem(file, where, "image_id", f"expected an integer, got {image_id!r}"))
    elif image_id not in frames:
        problems.append(Problem(file, where, "image_id", f"{image_id} is not an image of the dataset"))
    category = rec.get("category_id")
    if category not in categories:
        problems.append(
            Problem(file, where, "category_id", f"{category!r} is not one of the dataset's {sorted(categories)}")
        )
    bbox = rec.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        problems.append(Problem(file, where, "bbox", f"expected [x, y, w, h] numbers, got {bbox!r}"))
    elif bbox[2] < 0 or bbox[3] < 0:
        problems.append(Problem(file, where, "bbox", f"width and height must be >= 0, got {bbox}"))
    score = rec.get("score")
    if not _number(score) or not 0.0 <= score <= 1.0:
        problems.append(Problem(file, where, "score", f"expected a number in [0, 1], got {score!r}"))
    return problems


def read_coco_results(path: str | Path, index: DatasetIndex) -> Predictions:
    """Predictions per ``image_id`` of ``index`` (frames without records get none)."""
    path = Path(path)
    file = str(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(Problem(file, "", "", "file not found"), header="cannot read predictions") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(Problem(file, "", "", f"not a JSON file ({exc})"), header="cannot read predictions") from exc
    if not isinstance(records, list):
        raise DatasetError(
            Problem(file, "", "", f"expected a list of COCO result records, got {type(records).__name__}"),
            header="cannot read predictions",
        )
    frames = {f.image_id for v in index.videos for f in v.frames}
    categories = {cid: i for i, cid in enumerate(index.category_ids)}
    problems: list[Problem] = []
    for n, rec in enumerate(records):
        problems.extend(_check_record(rec, n, file, frames, categories))
        if len(problems) >= MAX_REPORTED:
            break
    if problems:
        raise DatasetError(problems, header=f"{file} does not fit the dataset {index.source}")
    grouped: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        grouped.setdefault(rec["image_id"], []).append(rec)
    predictions: Predictions = {}
    for image_id, recs in grouped.items():
        xywh = np.array([r["bbox"] for r in recs], dtype=np.float32)
        predictions[image_id] = {
            "boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            "scores": np.array([r["score"] for r in recs], dtype=np.float32),
            "labels": np.array([categories[r["category_id"]] for r in recs], dtype=np.int64),
        }
    return predictions
