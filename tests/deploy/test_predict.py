"""`predict` end to end: an mp4 in, an annotated mp4 + detections that `eval` scores out."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from v2idetr import Detector, api
from v2idetr.cli import main
from v2idetr.data.io import read_frame
from v2idetr.data.load import load_index
from v2idetr.deploy.predict import predict
from v2idetr.deploy.video import VideoWriter
from v2idetr.errors import DatasetError


def _video_with_ground_truth(tiny_synth, folder: Path) -> tuple[Path, Path, int]:
    """One labelled validation video as an mp4, and a COCO-VID JSON of its frames with
    image ids = position + 1 (the ids `predict` gives the frames of a video file)."""
    index = load_index(tiny_synth.val_json)
    video = max(index.videos, key=lambda v: sum(len(f.boxes) for f in v.frames))
    doc = json.loads(Path(tiny_synth.val_json).read_text())
    by_id = {im["id"]: im for im in doc["images"]}
    images, annotations = [], []
    with VideoWriter(folder / "clip.mp4", fps=12) as writer:
        for n, frame in enumerate(video.frames):
            writer.write(read_frame(frame))
            images.append({**by_id[frame.image_id], "id": n + 1, "video_id": 1,
                           "file_name": str(Path(tiny_synth.val_json).parent / by_id[frame.image_id]["file_name"])})
            annotations += [{**a, "image_id": n + 1} for a in doc["annotations"] if a["image_id"] == frame.image_id]
    gt = {"videos": [{"id": 1, "name": "clip"}], "images": images, "annotations": annotations,
          "categories": doc["categories"]}
    (folder / "gt.json").write_text(json.dumps(gt))
    return folder / "clip.mp4", folder / "gt.json", len(video.frames)


def test_predict_on_mp4_writes_video_and_scoreable_detections(tiny_synth, tiny_checkpoint: Path, tmp_path: Path) -> None:
    mp4, gt, n = _video_with_ground_truth(tiny_synth, tmp_path)
    out = tmp_path / "pred"
    assert main(["predict", str(mp4), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--score-thresh",
                 "0.01", "--batch-size", "3", "--no-progress"]) == 0
    with av.open(str(out / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == n
        assert abs(float(stream.average_rate) - 12) < 0.01
    records = json.loads((out / "detections.json").read_text())
    assert records and {r["image_id"] for r in records} <= set(range(1, n + 1))
    assert all(r["score"] >= 0.01 for r in records)
    metrics = api.evaluate_detections(out / "detections.json", gt, out_dir=tmp_path / "eval")
    assert metrics["num_frames"] == n and metrics["num_gt"] > 0 and metrics["AP50"] is not None
    assert (tmp_path / "eval" / "metrics.json").is_file()
    # The API on the decoded frames gives the boxes predict wrote (rounded to 0.01 px there).
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.01)
    frames = [read_frame(f) for f in load_index(mp4).videos[0].frames]
    for image_id, result in enumerate(det(frames), start=1):
        mine = [r for r in records if r["image_id"] == image_id]
        assert len(mine) == len(result)
        for rec, box, score in zip(mine, result.boxes, result.scores, strict=True):
            x, y, w, h = rec["bbox"]
            np.testing.assert_allclose([x, y, x + w, y + h], box, atol=0.02)
            assert rec["score"] == pytest.approx(float(score), abs=1e-4)


def test_predict_dataset_and_image_sources(tiny_synth, tiny_checkpoint: Path, tmp_path: Path) -> None:
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.0)
    result = predict(det, tiny_synth.val_json, tmp_path / "ds", save_video=True, save_images=True, progress=False)
    index = load_index(tiny_synth.val_json)
    assert result.frames == index.num_frames and len(result.images) == index.num_frames
    assert len(result.videos) == len(index.videos) and all(p.is_file() for p in result.videos)
    ids = {r["image_id"] for r in json.loads(result.detections_json.read_text())}
    assert ids <= {f.image_id for v in index.videos for f in v.frames} and ids
    one = index.videos[0].frames[0].path
    single = predict(det, one, tmp_path / "one", save_images=True, progress=False)
    assert single.frames == 1 and single.videos == [] and single.images[0].is_file()


def test_failed_run_leaves_no_partial_video(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A frame that cannot be decoded mid-stream stops the run with its name; no truncated mp4 is left."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    data = (folder / "f4.png").read_bytes()
    (folder / "f4.png").write_bytes(data[: len(data) // 2])  # header intact: indexed, fails when decoded
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(DatasetError, match=r"f4\.png"):
        predict(det, folder, tmp_path / "out", batch_size=2, save_video=True, progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
