"""The training files of the pseudo-label rows: each row's rules reach `v2idetr pseudo-label` for the
budget's unlabelled frames and the archive alike, and the row trains on what it wrote (the rows' whole
runs: tests/bench/test_accuracy.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from v2idetr import api
from v2idetr.bench.accuracy import Splits, train_row
from v2idetr.bench.rows import ROWS
from v2idetr.bench.schedule import Schedule
from v2idetr.data.archive import synthetic_archive
from v2idetr.data.commands import write_coco_vid
from v2idetr.data.load import load_index
from v2idetr.data.unlabelled import sparsify


@pytest.mark.parametrize("row", ["student-pseudo-labels", "student-pseudo-labels-temporal",
                                 "student-pseudo-labels-interpolated", "student-archive-pseudo-labels-interpolated"])
def test_each_rows_rules_reach_the_pseudo_labeller(row, tiny_synth, tmp_path: Path, monkeypatch) -> None:
    labelled, trained = [], []

    def pseudo_label(teacher, data, out, progress=True, **rules):  # the input unchanged: the rules are the point
        labelled.append((Path(data).name, rules))
        write_coco_vid(load_index(data), str(data), str(out))

    monkeypatch.setattr(api, "pseudo_label", pseudo_label)
    monkeypatch.setattr(api, "distill", lambda teacher, config, overrides, out, **kw: trained.append(overrides))
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparsify(load_index(tiny_synth.train_json), 4).to_coco_vid(image_root=tmp_path)))
    archive = synthetic_archive(tmp_path / "archive", "ultrasound", 1, 4, 32, 0) if ROWS[row].archive else None
    splits = Splits(budget, tiny_synth.val_json, tiny_synth.val_json, unlabelled=archive)
    train_row(ROWS[row], 0, splits, "tiny", Schedule(8), [], lambda name: tmp_path / "runs" / name / "seed-0",
              progress=False)
    rules = {"temporal": ROWS[row].pseudo_temporal, "interpolate": ROWS[row].pseudo_interpolate}
    assert labelled == [("budget.json", rules)] + ([("unlabelled.json", rules)] if archive else [])
    assert (rules["interpolate"] > 0) == row.endswith("-interpolated")
    written = tmp_path / "runs" / row / ("seed-0-train-and-archive.json" if archive else "seed-0-pseudo-labels.json")
    assert f"data.train={written}" in trained[0]
