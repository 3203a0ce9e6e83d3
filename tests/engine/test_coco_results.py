"""Reading COCO result files: boxes and categories mapped right, every bad record named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from v2idetr import api
from v2idetr.errors import DatasetError


def test_perfect_detections_score_ap_one(tiny_synth, tmp_path: Path) -> None:
    """The result-file reader maps boxes and categories right: ground truth as predictions is AP 1."""
    doc = json.loads(Path(tiny_synth.val_json).read_text())
    records = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in doc["annotations"]]
    (tmp_path / "perfect.json").write_text(json.dumps(records))
    metrics = api.evaluate_detections(tmp_path / "perfect.json", tiny_synth.val_json)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["recall"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "record, field",
    [
        ({"image_id": 99999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id"),
        ({"image_id": "x", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id"),
        ({"category_id": 42, "bbox": [0, 0, 1, 1], "score": 0.5}, "category_id"),
        ({"category_id": 1, "bbox": [0, 0, -1, 1], "score": 0.5}, "bbox"),
        ({"category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "bbox"),
        ({"category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.5}, "score"),
    ],
)
def test_bad_result_records_name_file_record_and_field(tiny_synth, tmp_path: Path, record: dict, field: str) -> None:
    first = json.loads(Path(tiny_synth.val_json).read_text())["images"][0]["id"]
    good = {"image_id": first, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    (tmp_path / "p.json").write_text(json.dumps([good, {**good, **record}]))
    with pytest.raises(DatasetError, match=rf"p\.json: record 1, field '{field}'"):
        api.evaluate_detections(tmp_path / "p.json", tiny_synth.val_json)
