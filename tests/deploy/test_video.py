"""The mp4 writer: frame count and rate kept, odd sizes handled, nothing left on failure."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from v2idetr.deploy.runtime import Detections
from v2idetr.deploy.video import VideoWriter, draw_detections


def test_writer_keeps_frames_and_rate_and_pads_odd_sizes(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "a.mp4", fps=7.5) as writer:
        for level in range(0, 250, 25):
            writer.write(np.full((33, 41, 3), level, dtype=np.uint8))
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(7.5)
    assert len(frames) == 10 and frames[0].shape == (34, 42, 3)
    assert abs(float(frames[4][:33, :41].mean()) - 100) < 3  # the content, not the padding
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_writer_error_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frame 1 is 20x20"):
        with VideoWriter(tmp_path / "b.mp4") as writer:
            writer.write(np.zeros((16, 16, 3), dtype=np.uint8))
            writer.write(np.zeros((20, 20, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_draw_detections_colours_the_box_outline_only() -> None:
    frame = np.zeros((40, 40, 3), dtype=np.uint8)
    det = Detections(np.array([[10, 20, 30, 35]], dtype=np.float32), np.array([0.9], dtype=np.float32),
                     np.array([1]), ["benign", "malignant"], [1, 2])
    out = draw_detections(frame, det)
    assert frame.sum() == 0  # input untouched
    assert tuple(out[35, 20]) == (255, 60, 60)  # bottom edge in the class-1 colour
    assert out[28, 20].sum() == 0  # inside the box: untouched
