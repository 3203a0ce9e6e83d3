"""`predict` and the API with a video teacher: eval's clips, streamed through a bounded window."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from v2idetr import ClipDetector, Detector, api
from v2idetr.cli import main
from v2idetr.data.clips import ClipSampling, support_frame_indices
from v2idetr.data.io import read_frame
from v2idetr.data.load import load_index
from v2idetr.deploy.clips import ClipWindow, window_bound
from v2idetr.deploy.predict import predict
from v2idetr.deploy.runtime import load_detector
from v2idetr.deploy.video import VideoWriter
from v2idetr.engine.inference import build_eval_loader, predict_loader
from v2idetr.engine.metrics import select_detections
from v2idetr.errors import CheckpointError, ConfigError, DatasetError
from v2idetr.models.postprocess import PostProcess


def _stream(n: int, sampling: ClipSampling) -> tuple[list[tuple[int, int, list[int]]], int]:
    """Push frames 0..n-1 through a window: ``[(pushed frame, key, clip)]`` and the most frames it held."""
    window: ClipWindow[int] = ClipWindow(n, sampling)
    emitted, held = [], 0
    for frame in range(n):
        emitted += [(frame, key, clip) for key, clip in window.push(frame)]
        held = max(held, len(window))
    assert window.done and len(window) == 0
    return emitted, max(held, window.peak)


@pytest.mark.parametrize(
    ("T", "mode", "stride", "n"),
    [(3, "adjacent", 1, 40), (5, "adjacent", 2, 40), (4, "adjacent", 3, 40), (4, "past", 2, 40),
     (5, "adjacent", 2, 3), (3, "adjacent", 1, 1), (2, "past", 1, 2)],
)
def test_window_emits_eval_clips_each_key_once_within_its_bound(T: int, mode: str, stride: int, n: int) -> None:
    sampling = ClipSampling(T, mode, 0, stride)
    emitted, peak = _stream(n, sampling)
    assert [key for _, key, _ in emitted] == list(range(n))  # every key once, in order
    rng = np.random.default_rng(0)
    for pushed, key, clip in emitted:
        positions = support_frame_indices(n, key, T, mode, 0, stride, rng)
        assert clip == positions
        assert pushed == max(positions)  # emitted as soon as its last support frame was decoded
    bound = window_bound(sampling)
    assert bound == stride * (T - 1) + 1 <= 2 * stride * -(-(T - 1) // 2) + 1
    assert peak == min(bound, n)  # never more, and a long video does reach it (the bound is tight)


def test_window_clamps_at_the_video_ends() -> None:
    """Near an end the nearest frame repeats (written out by hand, not by support_frame_indices)."""
    clips = {key: clip for _, key, clip in _stream(5, ClipSampling(3, "adjacent", 0, 1))[0]}
    assert clips[0] == [0, 0, 1] and clips[2] == [2, 1, 3] and clips[4] == [4, 3, 4]
    clips = {key: clip for _, key, clip in _stream(4, ClipSampling(5, "adjacent", 0, 2))[0]}
    assert clips[0] == [0, 0, 0, 2, 3] and clips[3] == [3, 0, 1, 3, 3]
    clips = {key: clip for _, key, clip in _stream(4, ClipSampling(3, "past", 0, 2))[0]}
    assert clips[1] == [1, 0, 0] and clips[3] == [3, 0, 1]
    with pytest.raises(ValueError, match="deterministic"):
        ClipWindow(4, ClipSampling(3, "random", 2, 1))


def _assert_matches_eval(records: list[dict], teacher_ckpt: Path, data: Path, cfg_change: dict | None,
                         thresh: float, nms_iou: float) -> None:
    """predict's records == eval's top-k on eval's clips, after the threshold and NMS."""
    model, cfg, _ = api.load_model(teacher_ckpt)
    if cfg_change:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **cfg_change))
    index = load_index(data)
    loader = build_eval_loader(cfg, index, batch_size=5, keys=None)
    preds = predict_loader(model, PostProcess(cfg.eval.num_select), loader, torch.device("cpu"), progress=False)
    frames = [f for v in index.videos for f in v.frames]
    assert [r["image_id"] for r in records] == sorted((r["image_id"] for r in records),
                                                      key=[f.image_id for f in frames].index)  # frame order
    total = 0
    for frame in frames:
        ref = preds[frame.image_id]
        keep = select_detections(ref["boxes"], ref["scores"], thresh, nms_iou)
        mine = [r for r in records if r["image_id"] == frame.image_id]
        assert len(mine) == len(keep), frame.image_id
        for rec, box, score in zip(mine, ref["boxes"][keep], ref["scores"][keep], strict=True):
            x, y, w, h = rec["bbox"]
            np.testing.assert_allclose([x, y, x + w, y + h], box, atol=0.02)
            assert rec["score"] == pytest.approx(float(score), abs=2e-5)
        total += len(keep)
    assert total > len(frames)  # something to compare: several boxes per frame


def test_teacher_predict_on_a_dataset_equals_eval(tiny_synth, teacher_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_synth.val_json), "--checkpoint", str(teacher_ckpt), "--out", str(out),
                 "--score-thresh", "0.01", "--nms-iou", "0.5", "--batch-size", "3", "--device", "cpu",
                 "--precision", "fp32", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["model"] == "teacher (3-frame clips)" and printed["score_thresh"] == 0.01
    assert printed["frames"] == load_index(tiny_synth.val_json).num_frames
    records = json.loads((out / "detections.json").read_text())
    _assert_matches_eval(records, teacher_ckpt, tiny_synth.val_json, None, 0.01, 0.5)


def test_teacher_predict_follows_the_config_stride_and_causal_mode(tiny_synth, teacher_ckpt: Path,
                                                                     tmp_path: Path) -> None:
    model, cfg, meta = api.load_model(teacher_ckpt)
    change = {"stride": 2, "clip_mode": "past"}
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **change))
    det = ClipDetector(model, cfg, meta, device="cpu", score_thresh=0.0, nms_iou=0.7)
    assert det.clip_sampling == ClipSampling(3, "past", cfg.data.window, 2)
    result = predict(det, tiny_synth.val_json, tmp_path / "p", batch_size=4, progress=False)
    assert result.window_peak == window_bound(det.clip_sampling) == 5
    _assert_matches_eval(json.loads(result.detections_json.read_text()), teacher_ckpt, tiny_synth.val_json,
                         change, 0.0, 0.7)


def test_teacher_on_a_video_file_streams_clamped_clips(tiny_synth, teacher_ckpt: Path, tmp_path: Path) -> None:
    video = load_index(tiny_synth.val_json).videos[0]
    mp4 = tmp_path / "clip.mp4"
    with VideoWriter(mp4, fps=10) as writer:
        for frame in video.frames:
            writer.write(read_frame(frame))
    det = ClipDetector.from_checkpoint(teacher_ckpt, device="cpu", score_thresh=0.0, nms_iou=1.0)
    result = predict(det, mp4, tmp_path / "pred", batch_size=2, progress=False)
    n = len(video.frames)
    assert result.frames == n and result.model == "teacher (3-frame clips)"
    assert result.window_peak == 3 < n  # T=3, stride 1: a sliding window, not the whole video
    with av.open(str(result.videos[0])) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == n
    records = json.loads(result.detections_json.read_text())
    frames = [read_frame(f) for f in load_index(mp4).videos[0].frames]
    # Key frames at both ends and in the middle, their clips written out by hand (clamped at the ends).
    by_hand = {1: [0, 0, 1], 4: [3, 2, 4], n: [n - 1, n - 2, n - 1]}
    expected = det.predict_clips([[frames[p] for p in clip] for clip in by_hand.values()])
    for image_id, result_ in zip(by_hand, expected, strict=True):
        mine = [r for r in records if r["image_id"] == image_id]
        assert len(mine) == len(result_) == 10
        np.testing.assert_allclose([r["score"] for r in mine], result_.scores, atol=2e-5)
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]
        np.testing.assert_allclose(boxes, result_.boxes, atol=0.02)
    # The support frames matter: the same key frame with another clip scores otherwise.
    (wrong,) = det.predict_clips([[frames[0], frames[1], frames[2]]])
    assert np.abs(wrong.scores - expected[0].scores).max() > 1e-4
    # The API's whole-video call builds the same clips.
    for image_id, res in enumerate(det.predict_video(frames, batch_size=3), start=1):
        mine = [r["score"] for r in records if r["image_id"] == image_id]
        np.testing.assert_allclose(mine, res.scores, atol=2e-5)


def test_teacher_api_refuses_single_frames_and_bad_clips(teacher_ckpt: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="video teacher") as err:
        Detector.from_checkpoint(teacher_ckpt, device="cpu")
    assert str(teacher_ckpt) in str(err.value) and "ClipDetector" in str(err.value)
    assert "v2idetr predict" in str(err.value)
    with pytest.raises(CheckpointError, match="image model") as err:
        ClipDetector.from_checkpoint(tiny_checkpoint, device="cpu")
    assert str(tiny_checkpoint) in str(err.value)
    assert isinstance(load_detector(tiny_checkpoint, device="cpu"), Detector)
    det = load_detector(teacher_ckpt, device="cpu")
    assert isinstance(det, ClipDetector) and not isinstance(det, Detector) and det.num_frames == 3
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    for call in (lambda: det(frame), lambda: det([frame, frame, frame]), lambda: det.predict_frames([frame]),
                 lambda: det.predict_video(frame), lambda: det.predict_clips([frame])):
        with pytest.raises(TypeError, match="clip|frame"):
            call()
    with pytest.raises(ValueError, match="clips of 3 frames"):
        det.predict_clips([[frame, frame]])
    with pytest.raises(ValueError, match="one size"):
        det.predict_clips([[frame, frame, np.zeros((40, 64, 3), dtype=np.uint8)]])
    (res,) = det.predict_clips([[Image.fromarray(frame), frame, torch.zeros(3, 48, 64)]])  # any frame form
    assert res.boxes.shape[1] == 4 and (res.boxes[:, [1, 3]] <= 48).all()
    with pytest.raises(ConfigError, match="CUDA"):
        ClipDetector.from_checkpoint(teacher_ckpt, device="cpu", precision="fp16")


def test_teacher_predict_refuses_a_video_of_mixed_frame_sizes(teacher_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, h in enumerate((64, 64, 48, 64)):
        Image.fromarray(np.full((h, 64, 3), 40 * i, dtype=np.uint8)).save(folder / f"f{i}.png")
    det = ClipDetector.from_checkpoint(teacher_ckpt, device="cpu")
    with pytest.raises(DatasetError, match=r"f2\.png"):
        predict(det, folder, tmp_path / "out", batch_size=2, progress=False)


def test_export_refuses_a_teacher(teacher_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "teacher.onnx"
    assert main(["export", "--checkpoint", str(teacher_ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(teacher_ckpt) in err and "only image models" in err and not out.exists()
