"""Deployment engines: compile gives eager's detections; graph (CUDA graphs) refuses a CPU clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from v2idetr import Detector
from v2idetr.cli import main
from v2idetr.data.io import read_frame
from v2idetr.data.load import load_index
from v2idetr.errors import ConfigError


def test_compiled_engine_gives_eager_detections(tiny_synth, tiny_checkpoint: Path) -> None:
    frames = [read_frame(f) for f in load_index(tiny_synth.val_json).videos[0].frames[:4]]
    eager = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=1.0)
    compiled = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=1.0,
                                        engine="compile")
    assert compiled.engine == "compile"
    assert isinstance(compiled._forward, torch._dynamo.eval_frame.OptimizedModule)  # really compiled
    assert eager._forward is eager.model
    for _ in range(2):  # the second call replays the compiled graph
        for a, b in zip(eager(frames), compiled(frames), strict=True):
            assert len(a) == len(b) > 0
            np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
            np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)


def test_graph_engine_needs_cuda_and_says_so(tiny_synth, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="engine 'graph' replays CUDA graphs and needs a CUDA device, got cpu"):
        Detector.from_checkpoint(tiny_checkpoint, device="cpu", engine="graph")
    with pytest.raises(ConfigError, match="engine: expected one of eager, compile, graph"):
        Detector.from_checkpoint(tiny_checkpoint, device="cpu", engine="turbo")
    code = main(["predict", str(tiny_synth.val_json), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                 "--engine", "graph", "--out", str(tmp_path / "p"), "--no-progress"])
    assert code != 0 and "needs a CUDA device" in capsys.readouterr().err
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    code = main(["predict", str(tiny_synth.val_json), "--checkpoint", str(onnx), "--engine", "compile",
                 "--out", str(tmp_path / "q"), "--no-progress"])
    assert code != 0 and "runs in ONNX Runtime" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_graph_engine_on_cuda_gives_eager_detections(tiny_synth, tiny_checkpoint: Path, precision: str) -> None:
    frames = [read_frame(f) for f in load_index(tiny_synth.val_json).videos[0].frames[:4]]
    eager = Detector.from_checkpoint(tiny_checkpoint, device="cuda", score_thresh=0.0, nms_iou=1.0)
    graph = Detector.from_checkpoint(tiny_checkpoint, device="cuda", score_thresh=0.0, nms_iou=1.0,
                                     engine="graph", precision=precision)
    tol = {"fp32": (1e-3, 0.05), "bf16": (0.05, 2.0), "fp16": (0.02, 1.0)}[precision]  # score, box px
    for _ in range(3):  # record, then replay the CUDA graph
        for a, b in zip(eager(frames), graph(frames), strict=True):
            assert len(b) > 0
            np.testing.assert_allclose(b.scores[0], a.scores[0], atol=tol[0])
            np.testing.assert_allclose(b.boxes[0], a.boxes[0], atol=tol[1])
