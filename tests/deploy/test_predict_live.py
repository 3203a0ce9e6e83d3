"""`predict` on live sources: FFmpeg's test pattern (lavfi) stands in for a camera or a stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from v2idetr import Detector
from v2idetr.cli import main
from v2idetr.deploy.live import LiveSpec, LiveStream, live_source
from v2idetr.deploy.predict import predict
from v2idetr.deploy.video import VideoWriter
from v2idetr.errors import ConfigError, DatasetError

needs_lavfi = pytest.mark.skipif("lavfi" not in av.formats_available, reason="this PyAV's FFmpeg has no lavfi input")
PATTERN = "testsrc=size=64x48:rate={rate}"


def _frame_times(mp4: Path) -> list[float]:
    with av.open(str(mp4)) as container:
        return [float(f.time) for f in container.decode(container.streams.video[0])]


def test_stream_urls_and_input_formats_are_live_sources() -> None:
    assert live_source("rtsp://10.0.0.5:554/tower") == LiveSpec("rtsp://10.0.0.5:554/tower", None,
                                                                 {"rtsp_transport": "tcp"})
    assert live_source("udp://127.0.0.1:5000").name == "127.0.0.1"
    assert live_source("http://host/live/endoscope.m3u8").name == "endoscope"
    assert live_source("/dev/video0", "v4l2") == LiveSpec("/dev/video0", "v4l2")
    for not_live in ("clip.mp4", "/data/BUV/rawframes", "C:/videos/a.avi", "train.json"):
        assert live_source(not_live) is None


@needs_lavfi
def test_live_source_with_stream_buffer_processes_every_frame(tiny_checkpoint: Path, tmp_path: Path) -> None:
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0)
    result = predict(det, PATTERN.format(rate=25), tmp_path / "out", batch_size=3, progress=False,
                     input_format="lavfi", max_frames=10, stream_buffer=True)
    assert (result.frames, result.dropped) == (10, 0) and len(result.videos) == 1
    records = json.loads(result.detections_json.read_text())
    assert {r["image_id"] for r in records} == set(range(1, 11))  # score_thresh 0: every frame has boxes
    assert {r["frame_id"] for r in records} == set(range(10))
    assert _frame_times(result.videos[0]) == pytest.approx([i / 25 for i in range(10)], abs=2e-3)


class _Slow(Detector):
    """The tiny model plus 60 ms per batch: slower than a 100 fps source."""

    def predict_frames(self, frames: list[np.ndarray]):
        time.sleep(0.06)
        return super().predict_frames(frames)


@needs_lavfi
def test_a_slow_model_drops_frames_and_the_recording_keeps_real_time(tiny_checkpoint: Path, tmp_path: Path) -> None:
    det = _Slow.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0)
    result = predict(det, PATTERN.format(rate=100) + ",realtime", tmp_path / "out", batch_size=1,
                     progress=False, input_format="lavfi", max_frames=60)
    assert result.dropped > 20 and result.frames + result.dropped == 60
    ids = sorted({r["image_id"] for r in json.loads(result.detections_json.read_text())})
    assert len(ids) == result.frames and ids[-1] - ids[0] > len(ids)  # positions, with the gaps of the drops
    times = _frame_times(result.videos[0])
    # each frame where the source had it: the recording spans the source's time, not frames / fps
    assert len(times) == result.frames and times[-1] == pytest.approx((ids[-1] - ids[0]) / 100, abs=0.03)


@needs_lavfi
def test_ctrl_c_ends_a_live_run_with_its_outputs_finished(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "v2idetr", "predict", PATTERN.format(rate=25) + ",realtime", "--input-format",
           "lavfi", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--batch-size", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("*.tmp.mp4")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # a few more frames
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    (video,) = summary["videos"]
    assert summary["frames"] > 0 and len(_frame_times(Path(video))) == summary["frames"]
    assert len(json.loads((out / "detections.json").read_text())) == summary["num_detections"]
    assert not list(out.glob("*.tmp*"))


def test_a_recording_replays_as_a_live_file_url(tiny_checkpoint: Path, tmp_path: Path) -> None:
    mp4 = tmp_path / "rec.mp4"
    with VideoWriter(mp4, fps=10) as writer:
        for i in range(7):
            writer.write(np.full((48, 64, 3), 30 * i, dtype=np.uint8))
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0)
    result = predict(det, mp4.resolve().as_uri(), tmp_path / "out", progress=False, stream_buffer=True)
    assert (result.frames, result.dropped) == (7, 0) and result.videos[0].name == "rec.mp4"


def test_live_mistakes_are_refused_clearly(tiny_checkpoint: Path, teacher_ckpt: Path, tmp_path: Path, capsys) -> None:
    from v2idetr.deploy.runtime import ClipDetector

    with pytest.raises(ConfigError, match="video teacher needs the frames after each key frame"):
        predict(ClipDetector.from_checkpoint(teacher_ckpt, device="cpu"), "udp://127.0.0.1:9", tmp_path / "t")
    with pytest.raises(ConfigError, match="cannot read it"):
        predict(Detector.from_checkpoint(tiny_checkpoint, device="cpu"), "/dev/video0", tmp_path / "f",
                input_format="no-such-format")
    with pytest.raises(DatasetError, match="tcp://127.0.0.1:9.*FFmpeg cannot open it"):  # nothing listens on port 9
        predict(Detector.from_checkpoint(tiny_checkpoint, device="cpu"), "tcp://127.0.0.1:9", tmp_path / "n")
    mp4 = tmp_path / "a.mp4"
    with VideoWriter(mp4, fps=10) as writer:
        writer.write(np.zeros((48, 64, 3), dtype=np.uint8))
    assert main(["predict", str(mp4), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                 "--max-frames", "5"]) != 0
    assert "for live sources" in capsys.readouterr().err


class _LostAfter:
    """A container whose decoding fails after ``n`` frames, as when the network drops."""

    def __init__(self, container, n: int):
        self.container, self.n = container, n

    def decode(self, *args):
        for i, frame in enumerate(self.container.decode(*args)):
            if i == self.n:
                raise av.error.EOFError(5, "connection lost")
            yield frame

    def close(self) -> None:
        self.container.close()


@needs_lavfi
def test_a_source_that_fails_mid_stream_keeps_what_was_read() -> None:
    """The network drops after 3 frames: the stream ends there (the outputs so far are kept); a source
    that fails before its first frame is an error naming it."""
    stream = LiveStream(LiveSpec(PATTERN.format(rate=25), "lavfi"))
    stream.container = _LostAfter(stream.container, 3)
    assert [p for p, _, _ in stream.frames()] == [0, 1, 2]
    stream.close()
    stream = LiveStream(LiveSpec(PATTERN.format(rate=25), "lavfi"))
    stream.container = _LostAfter(stream.container, 0)
    with pytest.raises(DatasetError, match="no frame could be read"):
        list(stream.frames())
    stream.close()


def test_a_silent_network_source_times_out_with_a_clear_error() -> None:
    """No sender on the port: FFmpeg's timeout ("Immediate exit requested") is said as what it means."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a free port, then released
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DatasetError, match=rf"udp://127.0.0.1:{port}.*'open'.*nothing arrived within 1 s"):
        LiveStream(LiveSpec(f"udp://127.0.0.1:{port}"), timeout_s=1.0)
    assert time.monotonic() - start < 30


@needs_lavfi
def test_detector_stream_yields_live_detections_and_closes_on_break(tiny_checkpoint: Path) -> None:
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0)
    seen = [(frame.position, frame.pixels.shape, len(d)) for frame, d in
            det.stream(PATTERN.format(rate=25), input_format="lavfi", max_frames=5, keep_all=True)]
    assert [p for p, _, _ in seen] == [0, 1, 2, 3, 4] and all(s == (48, 64, 3) and n > 0 for _, s, n in seen)
    endless = det.stream(PATTERN.format(rate=25) + ",realtime", input_format="lavfi")
    positions = []
    for frame, _ in endless:
        positions.append(frame.position)
        if len(positions) == 3:
            break
    endless.close()  # the generator's finally stops the reader thread and closes the source
    assert positions[0] == 0 and positions == sorted(set(positions))
    assert not [t for t in threading.enumerate() if t.name == "v2idetr-live-reader"]
