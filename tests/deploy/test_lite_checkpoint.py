"""A Lite-backbone checkpoint goes through `eval`, `predict` and the API with the Lite normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from v2idetr import Detector
from v2idetr.cli import main
from v2idetr.data.load import load_index


def test_lite_checkpoint_through_eval_predict_and_the_api(tiny_synth, lite_checkpoint: Path, tmp_path: Path,
                                                          capsys) -> None:
    det = Detector.from_checkpoint(lite_checkpoint, device="cpu")
    backbone = det.model.detector.backbone
    assert backbone.is_lite
    torch.testing.assert_close(backbone.pixel_mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(backbone.pixel_std.flatten(), torch.full((3,), 0.5))
    assert main(["eval", "--checkpoint", str(lite_checkpoint), "--data", str(tiny_synth.val_json), "--out",
                 str(tmp_path / "ev"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["AP50"] is None or 0.0 <= saved["AP50"] <= 1.0
    capsys.readouterr()
    assert main(["predict", str(tiny_synth.val_json), "--checkpoint", str(lite_checkpoint), "--out",
                 str(tmp_path / "pred"), "--score-thresh", "0", "--no-save-video", "--no-progress"]) == 0
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert {r["image_id"] for r in records} == {f.image_id for v in load_index(tiny_synth.val_json).videos
                                               for f in v.frames}
