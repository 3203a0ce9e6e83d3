"""Report pieces: HTML from the demo's markdown, curves from metrics logs, the disagreement sheet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from v2idetr.data.load import load_index
from v2idetr.deploy.runtime import Detections
from v2idetr.engine.metrics import resolve_protocol
from v2idetr.report import disagreement_sheet, markdown_tables_to_html, plot_training_curves


def test_markdown_tables_images_and_headings_become_html() -> None:
    md = "# Title\n\ntext <b>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![curves](c.png)\n"
    out = markdown_tables_to_html(md)
    assert "<h1>Title</h1>" in out and "<p>text &lt;b&gt;</p>" in out
    assert "<th>a</th><th>b</th>" in out and "<td>1</td><td>2</td>" in out and "---" not in out
    assert '<img src="c.png" alt="curves">' in out


def test_training_curves_from_metrics_logs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"type": "train", "step": s, "loss": 10.0 / s} for s in (1, 2, 3)] + [{"type": "eval", "step": 3, "AP50": 0.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    path = plot_training_curves({"a": run, "missing": tmp_path / "nothing"}, tmp_path / "c.png")
    assert Image.open(path).size == (1000, 400)


def _dets(boxes: np.ndarray) -> Detections:
    n = len(boxes)
    return Detections(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.full(n, 0.9, dtype=np.float32),
                      np.zeros(n, dtype=int))


class _Blind:
    """A stand-in image model that never finds anything (the sheet only calls predict_frames)."""

    def __init__(self, protocol) -> None:
        self.protocol = protocol

    def predict_frames(self, pixels: list) -> list[Detections]:
        return [_dets(np.zeros((0, 4))) for _ in pixels]


class _Oracle(_Blind):
    """Returns the ground truth of the given frames, in the order the sheet asks for them."""

    def __init__(self, frames: list, protocol) -> None:
        super().__init__(protocol)
        self.frames = iter(frames)

    def predict_frames(self, pixels: list) -> list[Detections]:
        return [_dets(next(self.frames).boxes) for _ in pixels]


def test_disagreement_sheet_lists_degraded_frames_where_models_differ(tiny_synth, tmp_path: Path) -> None:
    index = load_index(tiny_synth.train_json)
    degraded = [f for v in index.videos for f in v.frames if f.degradation not in (None, "none") and len(f.boxes)]
    assert degraded
    protocol = resolve_protocol("yona")
    path, count = disagreement_sheet(index, {"blind": _Blind(protocol), "oracle": _Oracle(degraded, protocol)},
                                     tmp_path / "s.png", max_rows=3)
    assert count == len(degraded) and path is not None
    rows = min(3, len(degraded))
    assert Image.open(path).size[1] == rows * 64 * 3  # rows of 64 px frames scaled x3
    same = {"a": _Blind(protocol), "b": _Blind(protocol)}
    assert disagreement_sheet(index, same, tmp_path / "t.png") == (None, 0)
