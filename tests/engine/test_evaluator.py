"""evaluate(): the combined dict, splits, metrics.json / pr_curve.png and the text table."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.engine.evaluator import (
    DEGRADED,
    DEGRADED_ONE_FRAME,
    ONE_FRAME_SUFFICES,
    evaluate,
    format_metrics_table,
    plot_pr_curves,
)

G = [10.0, 10.0, 50.0, 50.0]
REQUIRED = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100", "precision", "recall", "f1",
            "protocol", "flicker", "false_alarms_per_1000", "by_degradation", "by_video", "num_frames", "num_gt")


def make_index(videos: dict[str, list[tuple[list[list[float]], str | None]]]) -> DatasetIndex:
    """``{video name: [(boxes, degradation), ...]}``; 100 x 100 frames, one class with id 1."""
    records, image_id = [], 1
    for vid, (name, frames) in enumerate(videos.items(), start=1):
        video = VideoRecord(video_id=vid, name=name)
        for fid, (boxes, degradation) in enumerate(frames):
            arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            video.frames.append(FrameRecord(
                image_id=image_id, video_id=vid, frame_id=fid, path=Path(f"{name}/{fid}.png"),
                width=100, height=100, boxes=arr, labels=np.zeros(len(arr), np.int64),
                extra={} if degradation is None else {"degradation": degradation},
            ))
            image_id += 1
        records.append(video)
    return DatasetIndex(videos=records, class_names=["lesion"], category_ids=[1])


def perfect(index: DatasetIndex, image_ids: set[int] | None = None) -> dict[int, dict[str, np.ndarray]]:
    return {
        f.image_id: {"boxes": f.boxes.copy(), "scores": np.ones(len(f.boxes), np.float32), "labels": f.labels.copy()}
        for f in index.frames()
        if image_ids is None or f.image_id in image_ids
    }


def small_dataset() -> DatasetIndex:
    return make_index({
        "a": [([G], "none"), ([G], "none"), ([G], "blur"), ([], "none")],
        "b": [([[30, 30, 70, 70]], "blur"), ([[30, 30, 70, 70]], "none"), ([], "blur")],
    })


@pytest.mark.parametrize("protocol", ["yona", "strict", "stft"])
def test_perfect_predictions_everywhere(protocol: str) -> None:
    index = small_dataset()
    m = evaluate(index, perfect(index), protocol=protocol)
    for key in ("AP", "AP50", "AP75", "precision", "recall", "f1"):
        assert m[key] == pytest.approx(1.0), key
    assert (m["protocol"], m["num_frames"], m["num_gt"], m["num_negative_frames"]) == (protocol, 7, 5, 2)
    assert m["flicker"] == 0.0 and m["false_alarms_per_1000"] == 0.0


def test_by_degradation_and_by_video_splits() -> None:
    index = small_dataset()
    # image ids: a = 1..4, b = 5..7; blur frames with a lesion are 3 and 5: leave them undetected
    preds = perfect(index, image_ids={1, 2, 6})
    preds[7] = {"boxes": np.array([[0, 0, 20, 20]], np.float32), "scores": np.array([0.9], np.float32),
                "labels": np.zeros(1, np.int64)}  # a false alarm on b's lesion-free blur frame
    m = evaluate(index, preds)
    assert list(m["by_degradation"]) == ["none", "blur", DEGRADED, DEGRADED_ONE_FRAME, ONE_FRAME_SUFFICES]
    none, blur = m["by_degradation"]["none"], m["by_degradation"]["blur"]
    # the only degraded kind here is blur, which one frame suffices for, so both pooled groups equal it
    assert m["by_degradation"][DEGRADED] == blur == m["by_degradation"][DEGRADED_ONE_FRAME]
    # and one frame suffices for every frame: that group is all of them
    everything = m["by_degradation"][ONE_FRAME_SUFFICES]
    assert everything["num_frames"] == 7 and everything["AP50"] == pytest.approx(m["AP50"]) and m["AP50"] < 1.0
    # "none": frames 1, 2, 4, 6 -> 3 boxes, all found, no alarm on frame 4
    assert (none["num_frames"], none["num_gt"]) == (4, 3)
    assert none["AP50"] == pytest.approx(1.0) and none["recall"] == pytest.approx(1.0)
    assert none["false_alarms_per_1000"] == 0.0
    # "blur": frames 3, 5, 7 -> 2 boxes, none found; the only detection is the alarm on frame 7
    # (yona does not score lesion-free frames: no detection is scored, precision undefined)
    assert (blur["num_frames"], blur["num_gt"]) == (3, 2)
    assert blur["AP50"] == pytest.approx(0.0) and blur["recall"] == pytest.approx(0.0)
    assert blur["precision"] is None and blur["f1"] == 0.0
    assert blur["false_alarms_per_1000"] == pytest.approx(1000.0)
    # overall: 3 of 5 boxes; alarms 1 over 2 lesion-free frames
    assert m["recall"] == pytest.approx(0.6)
    assert m["false_alarms_per_1000"] == pytest.approx(500.0)
    # per video: a finds 2 of 3 boxes, pairs (1,2) ok, (2,3) flip, (3,4) skipped (4 is lesion-free);
    # b finds 1 of 2, pair (5,6) flips, (6,7) skipped
    assert set(m["by_video"]) == {"a", "b"}
    a, b = m["by_video"]["a"], m["by_video"]["b"]
    assert a["recall"] == pytest.approx(2 / 3) and b["recall"] == pytest.approx(0.5)
    assert a["flicker"] == pytest.approx(0.5) and b["flicker"] == pytest.approx(1.0)
    assert m["flicker"] == pytest.approx(2 / 3)


def test_degraded_one_frame_leaves_out_frames_whose_lesion_left_no_trace() -> None:
    index = make_index({"a": [([G], "none"), ([G], "blur"), ([G], "hopeless"), ([], "hopeless")]})
    hopeless, empty = index.videos[0].frames[2], index.videos[0].frames[3]
    hopeless.extra["lesion_visible"] = False
    empty.extra["lesion_visible"] = False  # a lesion-free frame keeps its false alarms in the split
    assert not hopeless.lesion_in_view and empty.lesion_in_view
    preds = perfect(index, image_ids={1, 2})  # the hopeless lesion is missed
    preds[4] = {"boxes": np.array([G], np.float32), "scores": np.array([0.9], np.float32),
                "labels": np.zeros(1, np.int64)}
    m = evaluate(index, preds)["by_degradation"]
    assert list(m)[-3:] == [DEGRADED, DEGRADED_ONE_FRAME, ONE_FRAME_SUFFICES]
    assert (m[DEGRADED]["num_frames"], m[DEGRADED]["num_gt"], m[DEGRADED]["recall"]) == (3, 2, 0.5)
    one_frame = m[DEGRADED_ONE_FRAME]
    assert (one_frame["num_frames"], one_frame["num_gt"], one_frame["recall"]) == (2, 1, 1.0)
    assert one_frame["false_alarms_per_1000"] == pytest.approx(1000.0)


def test_one_frame_suffices_leaves_out_hopeless_and_cueless_look_alike_frames() -> None:
    """A look-alike drawn exactly like a lesion is a false alarm no single frame can avoid; the pooled
    group over every frame without one (or without a trace of the lesion) is what a student can reach.
    A look-alike with a cue of its own (``distractor_cue``) stays in: one frame can reject it."""
    index = make_index({"a": [([G], "none"), ([G], "distractor"), ([G], "hopeless"), ([G], "noise")]})
    frames = index.videos[0].frames
    frames[1].extra["distractor_bbox"] = [60.0, 60.0, 30.0, 30.0]
    frames[2].extra["lesion_visible"] = False
    assert [f.one_frame_suffices for f in frames] == [True, False, False, True]
    frames[1].extra["distractor_cue"] = True
    assert [f.one_frame_suffices for f in frames] == [True, True, False, True]
    del frames[1].extra["distractor_cue"]
    preds = perfect(index, image_ids={1, 2, 4})
    preds[2] = {"boxes": np.array([[60, 60, 90, 90], G], np.float32), "scores": np.array([0.9, 0.8], np.float32),
                "labels": np.zeros(2, np.int64)}  # the look-alike scores above the lesion
    m = evaluate(index, preds)
    suffices = m["by_degradation"][ONE_FRAME_SUFFICES]
    assert (suffices["num_frames"], suffices["num_gt"], suffices["fp"]) == (2, 2, 0)
    assert suffices["AP50"] == pytest.approx(1.0) and m["AP50"] < 1.0
    # of the degraded frames (distractor, hopeless, noise) one frame suffices only for the noisy one
    degraded = m["by_degradation"][DEGRADED_ONE_FRAME]
    assert (degraded["num_frames"], degraded["num_gt"], degraded["AP50"]) == (1, 1, pytest.approx(1.0))
    assert m["by_degradation"][DEGRADED]["num_frames"] == 3 and m["by_degradation"][DEGRADED]["AP50"] < 1.0


def test_metrics_json_and_pr_curve_written(tmp_path: Path) -> None:
    index = small_dataset()
    preds = perfect(index)
    preds[1]["scores"] = np.array([0.5], np.float32)
    preds[4] = {"boxes": np.array([G], np.float32), "scores": np.array([0.8], np.float32),
                "labels": np.zeros(1, np.int64)}  # a FP ranked above a TP: AP50 < 1
    out = tmp_path / "eval"
    m = evaluate(index, preds, out_dir=out, name="student")
    data = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in data, key
    for key in ("AP", "AP50", "AP75", "AR100", "precision", "recall", "f1", "flicker"):
        assert 0.0 <= data[key] <= 1.0, key
    assert data["AP50"] == pytest.approx(m["AP50"]) and data["AP50"] < 1.0
    assert data["pr_curve"]["precision"][0] == pytest.approx(1.0)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    with Image.open(out / "pr_curve.png") as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_negative_only_dataset_does_not_crash(tmp_path: Path) -> None:
    index = make_index({"neg": [([], None), ([], None), ([], None)]})
    preds = {1: {"boxes": np.array([G], np.float32), "scores": np.array([0.9], np.float32),
                 "labels": np.zeros(1, np.int64)}}
    m = evaluate(index, preds, protocol="strict", out_dir=tmp_path)
    assert m["AP"] is None and m["AP50"] is None and m["recall"] is None
    assert m["precision"] == 0.0  # strict scores lesion-free frames: 1 detection, 0 TP
    assert m["false_alarms_per_1000"] == pytest.approx(1000 / 3)
    assert m["by_degradation"] == {}
    assert json.loads((tmp_path / "metrics.json").read_text())["AP"] is None
    assert "n/a" in format_metrics_table(m)


def test_unlabelled_frames_are_left_out_of_every_number_and_counted() -> None:
    """A detection on a frame nobody labelled is neither a false positive nor a false alarm."""
    index = small_dataset()
    unlabelled = [f for f in index.frames() if f.image_id in (4, 7)]  # the two lesion-free frames
    for f in unlabelled:
        f.labelled = False
    preds = perfect(index)
    for f in unlabelled:
        preds[f.image_id] = {"boxes": np.array([G], np.float32), "scores": np.array([0.99], np.float32),
                             "labels": np.zeros(1, np.int64)}
    m = evaluate(index, preds, protocol="strict")
    assert m["num_unlabelled_left_out"] == 2
    assert (m["num_frames"], m["num_gt"], m["num_negative_frames"]) == (5, 5, 0)
    assert m["AP"] == pytest.approx(1.0) and m["precision"] == pytest.approx(1.0)
    assert m["fp"] == 0 and m["false_alarms_per_1000"] in (0.0, None)
    labelled = evaluate(small_dataset(), preds, protocol="strict")  # the same boxes, frames labelled negative
    assert labelled["num_unlabelled_left_out"] == 0 and labelled["fp"] == 2 and labelled["precision"] < 1.0
    assert "2 unlabelled frames left out" in format_metrics_table(m)


def test_format_metrics_table_names_protocol_thresholds_and_splits() -> None:
    index = small_dataset()
    m = evaluate(index, perfect(index), protocol="stft", score_thresh=0.5)
    text = format_metrics_table(m)
    assert "protocol stft" in text and "score >= 0.500" in text and "NMS IoU none" in text
    assert "AP50 1.000" in text
    lines = text.splitlines()
    assert any(line.startswith("blur") for line in lines) and any(line.startswith("none") for line in lines)


def test_plot_pr_curves_several_models(tmp_path: Path) -> None:
    r = np.linspace(0, 1, 101)
    curves: dict[str, Any] = {"teacher": (r, np.ones(101)), "student": (r, 1 - 0.5 * r)}
    plot_pr_curves(curves, tmp_path / "both.png")
    with Image.open(tmp_path / "both.png") as img:
        assert img.format == "PNG"
