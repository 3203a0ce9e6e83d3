"""The synthetic generator: determinism, COCO-VID layout, box placement, degradation calibration, CLI."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr.data.synthetic import DEGRADATIONS, generate, save_preview
from v2idetr.data.synthetic_command import register
from v2idetr.errors import ConfigError


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _both(root: Path) -> tuple[dict, dict]:
    return _load(root / "train.json"), _load(root / "val.json")


def _grey(root: Path, image: dict) -> np.ndarray:
    return np.asarray(Image.open(root / image["file_name"]), dtype=np.float64).mean(axis=2)


def _inner_and_ring(img: np.ndarray, bbox: list[float]) -> tuple[float, float] | None:
    """Mean of the central half of the box and of a ring around the box (half a box wide)."""
    x, y, w, h = bbox
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = x + w / 2, y + h / 2
    inner = (np.abs(xx - cx) < w / 4) & (np.abs(yy - cy) < h / 4)
    in_box = (xx > x) & (xx < x + w) & (yy > y) & (yy < y + h)
    grown = (xx > x - w / 2) & (xx < x + 1.5 * w) & (yy > y - h / 2) & (yy < y + 1.5 * h)
    ring = grown & ~in_box
    if inner.sum() < 2 or ring.sum() < 8:
        return None
    return float(img[inner].mean()), float(img[ring].mean())


@pytest.fixture(scope="module")
def us(tmp_path_factory) -> Path:
    """Ultrasound, 8 videos x 24 frames at 64 px: big enough for rates, small enough to be fast."""
    out = tmp_path_factory.mktemp("us") / "data"
    generate(out, preset="ultrasound", videos=8, frames=24, size=64, seed=3, degradation_rate=0.3)
    return out


def test_same_seed_same_bytes_any_workers_and_other_seed_differs(tmp_path: Path) -> None:
    args = dict(preset="ultrasound", videos=4, frames=6, size=64, seed=7)
    a = generate(tmp_path / "a", **args)
    b = generate(tmp_path / "b", **args, workers=2)
    c = generate(tmp_path / "c", **{**args, "seed": 8})
    assert a.train_json.read_bytes() == b.train_json.read_bytes()
    assert a.val_json.read_bytes() == b.val_json.read_bytes()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "frames").rglob("*.png"))
    assert len(files) == 4 * 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert a.train_json.read_bytes() != c.train_json.read_bytes()
    first = files[0]
    assert not np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / first)), np.asarray(Image.open(tmp_path / "c" / first))
    )


def test_split_is_by_video_and_ids_are_unique_across_files(us: Path) -> None:
    train, val = _both(us)
    assert train["videos"] and val["videos"]
    for key in ("videos", "images", "annotations"):
        ids = [r["id"] for r in train[key]] + [r["id"] for r in val[key]]
        assert len(ids) == len(set(ids)), key
    train_videos, val_videos = {v["id"] for v in train["videos"]}, {v["id"] for v in val["videos"]}
    assert not train_videos & val_videos
    assert len(train_videos) + len(val_videos) == 8
    for doc, videos in ((train, train_videos), (val, val_videos)):
        assert {im["video_id"] for im in doc["images"]} == videos
        image_ids = {im["id"] for im in doc["images"]}
        assert all(a["image_id"] in image_ids for a in doc["annotations"])
        assert doc["info"]["preset"] == "ultrasound" and doc["info"]["seed"] == 3
        assert doc["info"]["size"] == 64 and doc["info"]["version"]
        assert doc["categories"] == [{"id": 1, "name": "lesion"}]
    # An instance (one lesion track) never spans two videos.
    owner: dict[int, int] = {}
    for doc in (train, val):
        video_of = {im["id"]: im["video_id"] for im in doc["images"]}
        for a in doc["annotations"]:
            assert owner.setdefault(a["instance_id"], video_of[a["image_id"]]) == video_of[a["image_id"]]


def test_every_frame_exists_with_its_size_and_boxes_lie_inside(us: Path) -> None:
    for doc in _both(us):
        frames_per_video = defaultdict(list)
        for im in doc["images"]:
            frames_per_video[im["video_id"]].append(im["frame_id"])
            with Image.open(us / im["file_name"]) as pil:
                assert pil.size == (im["width"], im["height"]) == (64, 64)
                assert pil.mode == "RGB"
            assert im["degradation"] in DEGRADATIONS
        assert all(sorted(f) == list(range(24)) for f in frames_per_video.values())
        for a in doc["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert a["area"] == pytest.approx(w * h, abs=0.05)
            assert a["category_id"] == 1 and a["iscrowd"] == 0
            assert a["visible_fraction"] >= 0.3
            assert a["truncated"] == (a["visible_fraction"] < 1.0)


def test_boxes_frame_the_dark_lesion_on_clean_ultrasound_frames(us: Path) -> None:
    """The box centre is darker than the ring around it; the same box moved away is not."""
    hits, shifted_hits, n = 0, 0, 0
    for doc in _both(us):
        images = {im["id"]: im for im in doc["images"]}
        for a in doc["annotations"]:
            im = images[a["image_id"]]
            if im["degradation"] != "none" or a["truncated"]:
                continue
            img = _grey(us, im)
            x, y, w, h = a["bbox"]
            # Same depth (tissue layers are horizontal), one and a half boxes to the side.
            moved = [x + 1.5 * w if x + 2.5 * w <= 64 else x - 1.5 * w, y, w, h]
            if moved[0] < 0:
                continue
            here, there = _inner_and_ring(img, a["bbox"]), _inner_and_ring(img, moved)
            if here is None or there is None:
                continue
            n += 1
            hits += here[0] < here[1] - 15  # grey levels
            shifted_hits += there[0] < there[1] - 15
    assert n >= 40
    assert hits / n >= 0.9
    assert shifted_hits / n <= hits / n - 0.5


def test_lesions_move_smoothly_between_frames(us: Path) -> None:
    for doc in _both(us):
        frame_of = {im["id"]: (im["video_id"], im["frame_id"]) for im in doc["images"]}
        track = defaultdict(dict)
        for a in doc["annotations"]:
            if not a["truncated"]:
                x, y, w, h = a["bbox"]
                track[a["instance_id"]][frame_of[a["image_id"]][1]] = (x + w / 2, y + h / 2, w * h)
        for boxes in track.values():
            for f, (cx, cy, area) in boxes.items():
                if f + 1 in boxes:
                    nx, ny, narea = boxes[f + 1]
                    assert np.hypot(nx - cx, ny - cy) < 0.08 * 64
                    assert 0.7 < narea / area < 1.4


def test_degradations_come_in_short_bursts_at_the_requested_rate(us: Path) -> None:
    labels = []
    for doc in _both(us):
        per_video = defaultdict(list)
        for im in sorted(doc["images"], key=lambda im: (im["video_id"], im["frame_id"])):
            per_video[im["video_id"]].append(im["degradation"])
        for seq in per_video.values():
            labels.extend(seq)
            run = 0
            for label in seq:
                run = run + 1 if label != "none" else 0
                assert run <= 2, seq
    degraded = sum(label != "none" for label in labels) / len(labels)
    assert 0.2 <= degraded <= 0.4
    assert len({label for label in labels if label != "none"}) >= 5


def test_no_degradation_when_the_rate_is_zero(tmp_path: Path) -> None:
    result = generate(tmp_path / "clean", videos=3, frames=6, size=48, degradation_rate=0.0)
    labels = [im["degradation"] for doc in _both(result.out) for im in doc["images"]]
    assert set(labels) == {"none"}
    assert result.stats["train"]["degradations"]["none"] + result.stats["val"]["degradations"]["none"] == 18


def test_faint_trace_on_hard_frames_and_none_on_hopeless(us: Path) -> None:
    """Noise/blur/low contrast/over-exposure keep the lesion darker than its ring most of the
    time; on hopeless frames (still annotated, not visible) the box holds nothing."""
    hard, hard_hits, hopeless = 0, 0, []
    for doc in _both(us):
        images = {im["id"]: im for im in doc["images"]}
        for a in doc["annotations"]:
            im = images[a["image_id"]]
            if a["truncated"]:
                continue
            pair = _inner_and_ring(_grey(us, im), a["bbox"])
            if pair is None:
                continue
            if im["degradation"] in ("noise", "blur", "low_contrast", "overexposed"):
                hard += 1
                hard_hits += pair[0] < pair[1]
            if im["degradation"] == "hopeless":
                assert not im["lesion_visible"] and a["occluded"]
                hopeless.append(abs(pair[0] - pair[1]))
        for im in doc["images"]:
            has_box = any(images[a["image_id"]] is im for a in doc["annotations"])
            if im["degradation"] in ("none", "noise", "blur") and has_box:
                assert im["lesion_visible"]
    assert hard >= 10 and hard_hits / hard >= 0.75
    assert hopeless and max(hopeless) < 8


def test_negative_videos_have_no_annotations_and_both_splits_have_some(us: Path) -> None:
    for doc in _both(us):
        video_of = {im["id"]: im["video_id"] for im in doc["images"]}
        annotated = {video_of[a["image_id"]] for a in doc["annotations"]}
        negatives = {v["id"] for v in doc["videos"] if v["negative"]}
        assert negatives, "each split gets a negative video"
        assert not negatives & annotated
        assert annotated == {v["id"] for v in doc["videos"]} - negatives


def test_distractor_frames_add_a_one_frame_blob_without_an_annotation(us: Path) -> None:
    seen = compared = 0
    for doc in _both(us):
        by_frame = {(im["video_id"], im["frame_id"]): im for im in doc["images"]}
        anns = defaultdict(list)
        for a in doc["annotations"]:
            anns[a["image_id"]].append(a)
        for im in doc["images"]:
            if im["degradation"] != "distractor":
                assert "distractor_bbox" not in im and "distractor_cue" not in im
                continue
            seen += 1
            assert im["distractor_cue"] is True, "generator 1.1 draws every look-alike with a cue"
            dx, dy, dw, dh = im["distractor_bbox"]
            for a in anns[im["id"]]:
                x, y, w, h = a["bbox"]
                assert dx >= x + w or dx + dw <= x or dy >= y + h or dy + dh <= y, "distractor overlaps a box"
            inner, ring = _inner_and_ring(_grey(us, im), im["distractor_bbox"])
            assert inner < ring - 10, "the look-alike is a dark blob like a lesion"
            for step in (-1, 1):
                neighbour = by_frame.get((im["video_id"], im["frame_id"] + step))
                if neighbour is None or neighbour["degradation"] != "none":
                    continue
                compared += 1
                n_inner, n_ring = _inner_and_ring(_grey(us, neighbour), im["distractor_bbox"])
                assert (n_ring - n_inner) < (ring - inner), "the blob is gone in the neighbouring frames"
    assert seen >= 2 and compared >= seen


def _echo_profile(shape, wall_band: tuple[float, float]) -> tuple[float, float, float]:
    """Echo (before speckle) inside, on the wall band and far outside a blob of ``shape`` at 128 px."""
    from v2idetr.data.synthetic.lesions import _Lesion
    from v2idetr.data.synthetic.presets import _Ultrasound

    us_preset = _Ultrasound(np.random.default_rng(0), 128, 192)
    shape.posterior = 0.0  # the blob's own wall and interior, not its column below
    shape.amp = np.zeros_like(shape.amp)  # a round outline, so rho bands are rings
    blob = _Lesion(None, 64.0, 64.0, 14.0, 14.0, 0.0, np.zeros_like(shape.phase), shape)
    echo = np.ones((128, 128))
    us_preset.add_lesion(echo, blob)
    sl, rho, _ = blob.field(128)
    window = echo[sl]
    band = (rho > wall_band[0]) & (rho < wall_band[1])
    return float(window[rho < 0.5].mean()), float(window[band].mean()), float(window[rho > 1.6].mean())


def test_look_alikes_carry_a_faint_cue_no_lesion_has() -> None:
    """DESIGN section 4: a distractor must be hard but not hopeless for a single frame."""
    from v2idetr.data.synthetic.degradations import _look_alike
    from v2idetr.data.synthetic.lesions import _make_shape

    rng = np.random.default_rng(0)
    for _ in range(20):
        lesion = _make_shape(rng, "ultrasound", 128, False)
        alike = _make_shape(rng, "ultrasound", 128, False)
        _look_alike(rng, alike, "ultrasound")
        l_in, l_wall, l_out = _echo_profile(lesion, (1.05, 1.25))
        a_in, a_wall, a_out = _echo_profile(alike, (1.05, 1.25))
        assert a_wall > 1.1 * a_out, "an echogenic wall around the look-alike"
        assert l_wall <= 1.0 * l_out + 1e-9, "no lesion has one"
        assert a_in < 0.2 * a_out and a_in < l_in + 0.1, "anechoic inside, at least as dark as a lesion"
    polyps = [_make_shape(rng, "colonoscopy", 128, False).tint for _ in range(200)]
    debris = []
    for _ in range(200):
        shape = _make_shape(rng, "colonoscopy", 128, False)
        _look_alike(rng, shape, "colonoscopy")
        debris.append(shape.tint)
    # Yellow-brown debris: blue falls further below green than on any polyp (paler or redder).
    assert max(t[2] / t[1] for t in debris) < min(t[2] / t[1] for t in polyps) - 0.02


def test_two_classes_and_colonoscopy_preview(tmp_path: Path) -> None:
    two = generate(tmp_path / "two", videos=3, frames=4, size=48, seed=2, two_classes=True)
    train, val = _both(two.out)
    assert train["categories"] == [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]
    for a in train["annotations"] + val["annotations"]:
        assert a["category_id"] == {"benign": 1, "malignant": 2}[a["subtype"]]
    with pytest.raises(ConfigError, match="two_classes"):
        generate(tmp_path / "bad", preset="colonoscopy", videos=1, frames=1, two_classes=True)


def test_bad_options_and_existing_output_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="preset"):
        generate(tmp_path / "x", preset="mri")
    with pytest.raises(ConfigError, match="degradation_rate"):
        generate(tmp_path / "x", degradation_rate=1.5)
    generate(tmp_path / "y", videos=1, frames=2, size=32, val_fraction=0.0)
    with pytest.raises(ConfigError, match="already holds"):
        generate(tmp_path / "y", videos=1, frames=2, size=32)
    generate(tmp_path / "y", videos=1, frames=3, size=32, val_fraction=0.0, overwrite=True)
    assert len(list((tmp_path / "y" / "frames").rglob("*.png"))) == 3


def test_cli_synth_writes_dataset_and_preview(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "colon"
    args = parser.parse_args(
        ["synth", "--preset", "colonoscopy", "--videos", "3", "--frames", "4", "--size", "48", "--seed", "5"]
        + ["--out", str(out), "--val-fraction", "0.34", "--degradation-rate", "0.5", "--preview"]
        + ["--no-progress"]
    )
    assert args.func(args) == 0
    train, val = _both(out)
    assert train["info"]["preset"] == "colonoscopy" and train["info"]["degradation_rate"] == 0.5
    assert train["categories"] == [{"id": 1, "name": "polyp"}]
    assert len(train["videos"]) == 2 and len(val["videos"]) == 1
    pixels = np.asarray(Image.open(out / train["images"][0]["file_name"]), dtype=np.int16)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 10, "colonoscopy frames are in colour"
    with Image.open(out / "preview.png") as preview:
        assert preview.size[0] >= 8 * 48


def test_save_preview_tiles(us: Path, tmp_path: Path) -> None:
    path = save_preview(us / "train.json", tmp_path / "p.png", max_frames=12)
    with Image.open(path) as sheet:
        tile = 64 * 3  # 64 px frames are enlarged to at least 192 px
        assert sheet.size == (8 * tile, 2 * tile)
