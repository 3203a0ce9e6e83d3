"""ONNX export: ONNX Runtime gives PyTorch's detections, for any batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from v2idetr import Detector
from v2idetr.cli import main
from v2idetr.data.io import read_frame
from v2idetr.data.load import load_index
from v2idetr.deploy.export import OnnxDetector, export_onnx
from v2idetr.deploy.predict import predict
from v2idetr.errors import V2IDetrError


@pytest.mark.parametrize("checkpoint", ["tiny_checkpoint", "lite_checkpoint"])
def test_onnx_matches_pytorch_with_dynamic_batch(tiny_synth, checkpoint: str, tmp_path: Path, request) -> None:
    tiny_checkpoint = request.getfixturevalue(checkpoint)
    frames = [read_frame(f) for f in load_index(tiny_synth.val_json).videos[0].frames[:5]]
    result = export_onnx(tiny_checkpoint, tmp_path / "m.onnx", size=64, sample_frames=frames[:2])
    print(f"ONNX vs PyTorch: max |d score| {result.max_abs_diff_scores:.2e}, max |d box| {result.max_abs_diff_boxes:.2e} px")
    assert result.max_abs_diff_scores < 1e-4 and result.max_abs_diff_boxes < 1e-2
    graph = onnx.load(str(result.path))
    assert [i.name for i in graph.graph.input] == ["images", "image_sizes", "orig_sizes"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ours = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=1.0)
    theirs = OnnxDetector(result.path, score_thresh=0.0, nms_iou=1.0)
    assert theirs.class_names == ours.class_names and theirs.category_ids == ours.category_ids
    for batch in (1, 3, 5):  # traced at batch 2
        for a, b in zip(ours(frames[:batch]), theirs(frames[:batch]), strict=True):
            assert len(a) == len(b) > 0
            np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
            np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)


def test_cli_export_and_predict_with_onnx(tiny_synth, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--size", "64", "--out", str(out)]) == 0
    assert '"max_abs_diff_scores"' in capsys.readouterr().out and out.is_file()
    detector = OnnxDetector(out)
    assert detector.score_thresh == 0.3  # the checkpoint's protocol travels in the metadata
    result = predict(OnnxDetector(out, score_thresh=0.0), tiny_synth.val_json, tmp_path / "p", progress=False)
    assert result.frames == load_index(tiny_synth.val_json).num_frames and result.detections > 0


def test_foreign_onnx_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(V2IDetrError, match="x.onnx"):
        OnnxDetector(tmp_path / "x.onnx")
