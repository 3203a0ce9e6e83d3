"""The Detector API: same detections as evaluation's path, every input kind, threshold and NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import nms

from v2idetr import Detections, Detector, api
from v2idetr.data.io import read_frame
from v2idetr.data.load import load_index
from v2idetr.engine.inference import build_eval_loader, predict_loader
from v2idetr.errors import CheckpointError, ConfigError
from v2idetr.models.postprocess import PostProcess


@pytest.mark.parametrize("checkpoint", ["tiny_checkpoint", "lite_checkpoint"])
def test_api_matches_the_evaluation_path(tiny_synth, checkpoint: str, request) -> None:
    """What `eval` scores and what users get from the API are the same numbers (ResNet and Lite
    backbones: each normalises its input its own way, inside the model)."""
    tiny_checkpoint = request.getfixturevalue(checkpoint)
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=1.0)
    model, cfg, _ = api.load_model(tiny_checkpoint)
    index = load_index(tiny_synth.val_json)
    preds = predict_loader(model, PostProcess(cfg.eval.num_select), build_eval_loader(cfg, index), torch.device("cpu"),
                           progress=False)
    frames = index.videos[0].frames[:3]
    results = det([read_frame(f) for f in frames])
    assert isinstance(results, list) and len(results) == 3
    for frame, result in zip(frames, results, strict=True):
        ref = preds[frame.image_id]
        assert len(result) == len(ref["scores"]) > 0
        np.testing.assert_allclose(result.scores, ref["scores"], atol=1e-5)
        np.testing.assert_allclose(result.boxes, ref["boxes"], atol=1e-3)
        np.testing.assert_array_equal(result.labels, ref["labels"])


def test_single_frame_in_any_form_gives_one_result(tiny_synth, tiny_checkpoint: Path) -> None:
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=1.0)
    pixels = read_frame(load_index(tiny_synth.val_json).videos[0].frames[0])
    a = det(pixels)
    b = det(Image.fromarray(pixels))
    c = det(torch.from_numpy(pixels).permute(2, 0, 1))
    assert isinstance(a, Detections)
    for other in (b, c):
        np.testing.assert_allclose(other.boxes, a.boxes, atol=1e-4)
    assert a.names == [det.class_names[i] for i in a.labels]
    h, w = pixels.shape[:2]
    assert (a.boxes[:, [0, 2]] <= w).all() and (a.boxes[:, [1, 3]] <= h).all() and (a.boxes >= 0).all()


def test_threshold_and_nms_come_from_the_checkpoint_protocol(tiny_synth, tiny_checkpoint: Path) -> None:
    pixels = read_frame(load_index(tiny_synth.val_json).videos[0].frames[0])
    default = Detector.from_checkpoint(tiny_checkpoint, device="cpu")
    assert default.score_thresh == 0.3 and default.protocol.nms_iou == 0.3  # yona
    everything = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=1.0)(pixels)
    # NMS on crafted top-k outputs: two overlapping pairs and a lone box.
    nms_only = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0, nms_iou=0.3)
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 20, 31, 30], [40, 0, 50, 9]]]).float()
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.75, 0.1]])
    (kept,) = nms_only.detections(scores, torch.zeros(1, 5, dtype=torch.int64), boxes)
    reference = nms(boxes[0], scores[0], 0.3).tolist()
    assert kept.scores.tolist() == pytest.approx(scores[0, reference].tolist()) and len(kept) == 3
    cut = float(np.median(everything.scores))
    above = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=cut, nms_iou=1.0)(pixels)
    assert len(above) == int((everything.scores >= cut).sum()) and (above.scores >= cut).all()
    assert (np.diff(everything.scores) <= 0).all() and len(everything) == 10  # num_queries x 1 class


def test_coco_records_use_dataset_category_ids(tiny_checkpoint: Path) -> None:
    det = Detections(np.array([[1.0, 2.0, 11.0, 22.0]], dtype=np.float32), np.array([0.5], dtype=np.float32),
                     np.array([0]), ["lesion"], [7])
    assert det.to_coco(3) == [{"image_id": 3, "category_id": 7, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]


def test_teacher_checkpoint_and_cpu_half_precision_are_refused(tiny_checkpoint: Path) -> None:
    model, cfg, meta = api.load_model(tiny_checkpoint)
    with pytest.raises(CheckpointError, match="video teacher"):
        Detector(model, cfg, {**meta, "kind": "teacher"}, device="cpu")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        Detector(model, cfg, meta, device="cpu", precision="fp16")
