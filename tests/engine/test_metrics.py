"""Metric functions on tiny hand-made indexes whose answers are worked out in the comments."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.engine.coco_eval import coco_metrics
from v2idetr.engine.metrics import (
    filter_detections,
    image_level_metrics,
    match_frames,
    resolve_protocol,
    temporal_stability,
)
from v2idetr.errors import ConfigError

G = [10.0, 10.0, 50.0, 50.0]  # a 40 x 40 lesion


def make_index(videos: list[list[dict[str, Any]]], category_ids: list[int] | None = None) -> DatasetIndex:
    """Videos of frames given as dicts with optional boxes, labels, box_extra, extra (100 x 100 px)."""
    cats = category_ids or [1]
    records, image_id = [], 1
    for vid, frames in enumerate(videos, start=1):
        video = VideoRecord(video_id=vid, name=f"v{vid}")
        for fid, spec in enumerate(frames):
            boxes = np.asarray(spec.get("boxes", []), dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(spec.get("labels", [0] * len(boxes)), dtype=np.int64)
            video.frames.append(FrameRecord(
                image_id=image_id, video_id=vid, frame_id=fid, path=Path(f"v{vid}/{fid}.png"),
                width=100, height=100, boxes=boxes, labels=labels,
                box_extra=spec.get("box_extra", []), extra=spec.get("extra", {}),
            ))
            image_id += 1
        records.append(video)
    return DatasetIndex(videos=records, class_names=[f"c{c}" for c in cats], category_ids=cats)


def dets(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None) -> dict[str, np.ndarray]:
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, dtype=np.float32),
        "labels": np.asarray(labels if labels is not None else [0] * len(scores), dtype=np.int64),
    }


def perfect(index: DatasetIndex) -> dict[int, dict[str, np.ndarray]]:
    return {
        f.image_id: {"boxes": f.boxes.copy(), "scores": np.ones(len(f.boxes), np.float32), "labels": f.labels.copy()}
        for f in index.frames()
    }


def disagreement_case() -> tuple[DatasetIndex, dict[int, dict[str, np.ndarray]]]:
    """Four frames where yona, strict and stft give different answers.

    frame 1 (GT G): d1 = top 60% of G (IoU 0.6, s 0.9), d2 = bottom 60% of G (IoU 0.6, s 0.8);
                    d1/d2 overlap with IoU 320/1600 = 0.2, so NMS 0.3 keeps both (a duplicate).
    frame 2 (GT G): d3 = 10 x 10 box at G's centre: centre inside, IoU 100/1600 = 0.0625 (s 0.9).
    frame 3 (GT G): d4 = G exactly, score 0.4 (passes 0.3, fails 0.6).
    frame 4 (no lesion): d5 far from everything (s 0.9).
    """
    index = make_index([[{"boxes": [G]}, {"boxes": [G]}, {"boxes": [G]}, {}]])
    preds = {
        1: dets([[10, 10, 50, 34], [10, 26, 50, 50]], [0.9, 0.8]),
        2: dets([[25, 25, 35, 35]], [0.9]),
        3: dets([G], [0.4]),
        4: dets([[60, 60, 80, 80]], [0.9]),
    }
    return index, preds


@pytest.mark.parametrize("protocol", ["yona", "strict", "stft"])
def test_perfect_predictions_score_one(protocol: str) -> None:
    index = make_index([[{"boxes": [G]}, {"boxes": [G, [60, 60, 90, 95]]}, {}]])
    m = image_level_metrics(index, perfect(index), protocol=protocol)
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
    assert (m["tp"], m["fp"], m["fn"], m["num_gt"]) == (3, 0, 0, 3)


def test_protocols_disagree_as_computed_by_hand() -> None:
    index, preds = disagreement_case()

    # yona: kept d1, d2 (TP, TP), d3 (FP), d4 (TP); frame 4 not scored.
    # TP 3, detections 4, GT 3 -> P 3/4, R 3/3, F1 2*3/(4+3) = 6/7; G2 is the one box not found.
    y = image_level_metrics(index, preds, "yona")
    assert (y["tp"], y["fp"], y["fn"], y["num_detections"], y["num_gt"]) == (3, 1, 1, 4, 3)
    assert y["precision"] == pytest.approx(0.75)
    assert y["recall"] == pytest.approx(1.0)
    assert y["f1"] == pytest.approx(6 / 7)

    # strict: d1 takes G1, d2 is an unmatched duplicate (FP), d3 FP, d4 TP, d5 FP on the negative.
    # TP 2, detections 5, GT 3 -> P 2/5, R 2/3, F1 2*2/(5+3) = 0.5.
    s = image_level_metrics(index, preds, "strict")
    assert (s["tp"], s["fp"], s["fn"], s["num_detections"]) == (2, 3, 1, 5)
    assert s["precision"] == pytest.approx(0.4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(0.5)

    # stft: score >= 0.6 drops d4; G1 hit by d1/d2 centres, G2 hit by d3's centre, G3 missed;
    # no detection centre outside a box; frame 4 not scored.
    # TP 2 (boxes hit), FP 0, FN 1 -> P 2/2, R 2/3, F1 2*1*(2/3)/(1+2/3) = 0.8.
    t = image_level_metrics(index, preds, "stft")
    assert (t["tp"], t["fp"], t["fn"], t["num_detections"]) == (2, 0, 1, 3)
    assert t["precision"] == pytest.approx(1.0)
    assert t["recall"] == pytest.approx(2 / 3)
    assert t["f1"] == pytest.approx(0.8)
    assert (y["score_thresh"], y["nms_iou"], t["score_thresh"], t["nms_iou"]) == (0.3, 0.3, 0.6, None)


def test_yona_applies_nms_and_overrides_take_effect() -> None:
    index = make_index([[{"boxes": [G]}]])
    # two near-identical boxes on one lesion: IoU (40*38)/(40*40) = 0.95 > 0.3
    preds = {1: dets([G, [10, 12, 50, 50]], [0.9, 0.8])}
    m = image_level_metrics(index, preds, "yona")
    assert (m["num_detections"], m["tp"], m["precision"], m["recall"]) == (1, 1, 1.0, 1.0)
    # without NMS both survive and, as published, both are TPs: recall 2/1
    no_nms = image_level_metrics(index, preds, "yona", nms_iou=1.0)
    assert (no_nms["num_detections"], no_nms["tp"], no_nms["recall"], no_nms["nms_iou"]) == (2, 2, 2.0, 1.0)
    # strict counts the duplicate as a FP instead
    strict = image_level_metrics(index, preds, "strict", nms_iou=1.0)
    assert (strict["tp"], strict["fp"], strict["recall"]) == (1, 1, 1.0)


def test_score_threshold_override() -> None:
    index, preds = disagreement_case()
    # stft at 0.3 keeps d4, so G3 is found too: TP 3 of 3 boxes, no FP.
    m = image_level_metrics(index, preds, "stft", score_thresh=0.3)
    assert (m["tp"], m["fp"], m["recall"], m["score_thresh"]) == (3, 0, 1.0, 0.3)
    # yona at 0.95 keeps nothing: precision undefined, recall 0, F1 0.
    none = image_level_metrics(index, preds, "yona", score_thresh=0.95)
    assert (none["num_detections"], none["precision"], none["recall"], none["f1"]) == (0, None, 0.0, 0.0)


def test_bad_protocol_and_thresholds_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        resolve_protocol("voc")
    with pytest.raises(ConfigError, match="score_thresh"):
        resolve_protocol("yona", score_thresh=1.5)
    with pytest.raises(ConfigError, match="nms_iou"):
        resolve_protocol("yona", nms_iou=-0.1)


def test_filter_detections_sorts_thresholds_and_suppresses() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=np.float64)
    scores = np.array([0.5, 0.9, 0.7, 0.1])
    kept, kept_scores = filter_detections(boxes, scores, score_thresh=0.3, nms_iou=0.5)
    np.testing.assert_allclose(kept_scores, [0.9, 0.7])
    np.testing.assert_allclose(kept[0], [0, 0, 10, 9])


def test_flicker_on_a_four_frame_video_without_instance_ids() -> None:
    # lesion in all 4 frames; found in frames 0, 1, 3, missed in 2 -> pairs (0,1) ok,
    # (1,2) flip, (2,3) flip -> flicker 2/3
    index = make_index([[{"boxes": [G]}] * 4])
    preds = {1: dets([G], [0.9]), 2: dets([G], [0.9]), 3: dets([[70, 70, 90, 90]], [0.9]), 4: dets([G], [0.9])}
    spec = resolve_protocol("yona")
    t = temporal_stability(index, match_frames(index, preds, spec))
    assert (t["flicker_pairs"], t["flicker_flips"]) == (3, 2)
    assert t["flicker"] == pytest.approx(2 / 3)
    assert t["false_alarms_per_1000"] is None  # no lesion-free frame


def test_flicker_pairs_lesions_by_instance_id_and_skips_negative_gaps() -> None:
    a, b = [5, 5, 30, 30], [60, 60, 95, 95]
    extra = [{"instance_id": 1}, {"instance_id": 2}]
    frame = {"boxes": [a, b], "box_extra": extra}
    # frames 0,1,2 hold lesions 1 and 2; frame 3 is lesion-free; frame 4 holds both again.
    index = make_index([[frame, frame, frame, {}, frame]])
    # lesion 1 found everywhere, lesion 2 only in frame 1 -> pairs (0,1),(1,2) per lesion = 4 pairs;
    # lesion 2 flips twice. The negative frame 3 breaks (2,3) and (3,4). The frame-level rule
    # ("any lesion found") would see no flip at all.
    preds = {1: dets([a], [0.9]), 2: dets([a, b], [0.9, 0.9]), 3: dets([a], [0.9]), 5: dets([a], [0.9])}
    t = temporal_stability(index, match_frames(index, preds, resolve_protocol("yona")))
    assert (t["flicker_pairs"], t["flicker_flips"]) == (4, 2)
    assert t["flicker"] == pytest.approx(0.5)


def test_false_alarms_per_1000_negative_frames() -> None:
    index = make_index([[{}, {}, {}, {}, {"boxes": [G]}]])
    preds = {
        1: dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.8, 0.7]),  # 3 alarms
        2: dets([[0, 0, 10, 10]], [0.2]),  # below 0.3: none
        3: dets([[0, 0, 10, 10], [0, 0, 10, 9]], [0.9, 0.8]),  # NMS merges them: 1 alarm
        5: dets([[60, 60, 90, 90]], [0.9]),  # on the lesion frame: not an alarm
    }
    t = temporal_stability(index, match_frames(index, preds, resolve_protocol("yona")))
    # 4 alarms on 4 lesion-free frames -> 1000 per 1000
    assert (t["negative_detections"], t["num_negative_frames"]) == (4, 4)
    assert t["false_alarms_per_1000"] == pytest.approx(1000.0)
    # stft's 0.6 threshold and no NMS: 3 + 0 + 2 = 5 alarms -> 1250
    t2 = temporal_stability(index, match_frames(index, preds, resolve_protocol("stft")))
    assert t2["false_alarms_per_1000"] == pytest.approx(1250.0)


def test_coco_perfect_and_category_ids_are_mapped_back() -> None:
    index = make_index(
        [[{"boxes": [G], "labels": [0]}, {"boxes": [[55, 50, 95, 90]], "labels": [1]},
          {"boxes": [[70, 75, 90, 95]], "labels": [0]}, {}]],
        category_ids=[3, 7],
    )
    m = coco_metrics(index, perfect(index))
    assert m["AP"] == m["AP50"] == m["AP75"] == m["AR100"] == pytest.approx(1.0)
    # 40 x 40 boxes are "medium" (32^2..96^2), the 20 x 20 one "small" (it would be medium if x2, y2
    # were passed as w, h); no large ground truth -> None, not -1
    assert m["AP_medium"] == pytest.approx(1.0)
    assert m["AP_small"] == pytest.approx(1.0)
    assert m["AP_large"] is None
    assert len(m["pr_curve"]["recall"]) == 101
    # swapped labels: right boxes, wrong classes -> AP 0
    swapped = {k: {**v, "labels": 1 - v["labels"]} for k, v in perfect(index).items()}
    assert coco_metrics(index, swapped)["AP50"] == pytest.approx(0.0)


def test_coco_uses_pixel_xywh_a_few_pixels_off_lowers_ap75_only() -> None:
    index = make_index([[{"boxes": [G]}, {"boxes": [[40, 30, 80, 70]]}]])
    preds = perfect(index)
    # shift both boxes right by 6 px: IoU = 34*40 / (2*1600 - 34*40) = 0.739 (> 0.5, < 0.75)
    shifted = {k: {**v, "boxes": v["boxes"] + np.array([6, 0, 6, 0], np.float32)} for k, v in preds.items()}
    m = coco_metrics(index, shifted)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert 0.0 < m["AP"] < 1.0


def test_negative_frames_count_against_ap_and_missing_frames_have_no_detection() -> None:
    index = make_index([[{"boxes": [G]}, {}]])
    preds = {1: dets([G], [0.5]), 2: dets([G], [0.9])}  # the higher-scored box is a FP on a negative
    m = coco_metrics(index, preds)
    # ranked: FP (0.9), TP (0.5) -> precision 0.5 at recall 1 -> AP50 0.5
    assert m["AP50"] == pytest.approx(0.5)
    assert coco_metrics(index, {})["AP50"] == pytest.approx(0.0)


def test_coco_without_ground_truth_is_none(caplog: pytest.LogCaptureFixture) -> None:
    index = make_index([[{}, {}]])
    m = coco_metrics(index, {1: dets([G], [0.9])})
    assert all(m[k] is None for k in ("AP", "AP50", "AP75", "AR100"))
    assert "no ground-truth" in caplog.text


def test_image_ids_restrict_to_a_subset() -> None:
    index, preds = disagreement_case()
    # only frames 1 and 3: yona TP 3 (d1, d2, d4), detections 3, GT 2
    m = image_level_metrics(index, preds, "yona", image_ids={1, 3})
    assert (m["tp"], m["num_detections"], m["num_gt"], m["precision"]) == (3, 3, 2, 1.0)
    assert coco_metrics(index, preds, image_ids={3})["AP50"] == pytest.approx(1.0)
