"""Clip transforms keep boxes on their pixels and treat every frame of a clip alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from v2idetr.config import DataConfig
from v2idetr.data.transforms import (
    Compose,
    ConvertBoxesToCxcywh,
    PhotometricJitter,
    RandomCropKeepBoxes,
    RandomHorizontalFlip,
    RandomResize,
    ToTensor,
    build_eval_transforms,
    build_train_transforms,
)
from v2idetr.errors import ConfigError

H, W = 48, 64


def _frame(box: tuple[int, int, int, int] | None, colour: tuple[int, int, int] = (230, 20, 20)) -> np.ndarray:
    """A grey frame with a filled rectangle covering pixels ``[x1, x2) x [y1, y2)``."""
    img = np.full((H, W, 3), 90, dtype=np.uint8)
    img[::7, :, 1] = 110  # some texture, so a wrong flip/crop cannot hide behind symmetry
    if box is not None:
        x1, y1, x2, y2 = box
        img[y1:y2, x1:x2] = colour
    return img


def _target(boxes: list[tuple[int, int, int, int]]) -> dict:
    return {
        "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.arange(len(boxes), dtype=np.int64),
        "image_id": 1,
    }


def _painted_box(img: np.ndarray) -> np.ndarray | None:
    """x1, y1, x2, y2 (pixel edges) of the red pixels, or None when there are none."""
    a = np.asarray(img).astype(int)
    red = (a[:, :, 0] - a[:, :, 1]) > 70
    if not red.any():
        return None
    ys, xs = np.nonzero(red)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _clip(T: int = 3) -> tuple[list[np.ndarray], list[dict]]:
    """Every frame shows the same rectangle; frame 2 also has a second box off to the right."""
    box = (10, 8, 30, 28)
    images = [_frame(box) for _ in range(T)]
    return images, [_target([box]) for _ in range(T)]


GEOMETRIC = {
    "resize": RandomResize([24, 40, 60], max_size=100),
    "flip": RandomHorizontalFlip(1.0),
    "crop": RandomCropKeepBoxes(1.0, min_scale=0.5),
    "compose": Compose([RandomHorizontalFlip(0.5), RandomCropKeepBoxes(0.7), RandomResize([32, 56], max_size=90)]),
}


@pytest.mark.parametrize("name", list(GEOMETRIC))
@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_pixels_and_frames_agree(name: str, seed: int) -> None:
    images, targets = _clip()
    out_images, out_targets = GEOMETRIC[name](images, targets, np.random.default_rng(seed))
    first = np.asarray(out_images[0])
    for img, target in zip(out_images, out_targets, strict=True):
        arr = np.asarray(img)
        assert arr.shape == first.shape
        np.testing.assert_array_equal(arr, first)  # the same geometric transform for every frame
        painted = _painted_box(arr)
        assert painted is not None, "the key-frame box must stay in view"
        assert target["boxes"].shape == (1, 4) and target["boxes"].dtype == np.float32
        np.testing.assert_allclose(target["boxes"][0], painted, atol=1.5)
        np.testing.assert_array_equal(target["labels"], [0])


def test_resize_scales_boxes_exactly_and_caps_long_side() -> None:
    images, targets = _clip(T=2)
    out, tg = RandomResize([24], max_size=1000)(images, targets, np.random.default_rng(0))
    assert np.asarray(out[0]).shape[:2] == (24, 32)
    np.testing.assert_allclose(tg[1]["boxes"][0], np.array([10, 8, 30, 28]) * 0.5, rtol=1e-6)
    out, tg = RandomResize([48], max_size=40)(images, targets, np.random.default_rng(0))
    assert np.asarray(out[0]).shape[:2] == (30, 40)  # long side capped, aspect kept
    np.testing.assert_allclose(tg[0]["boxes"][0], np.array([10, 8, 30, 28]) * np.array([40 / 64, 30 / 48] * 2), rtol=1e-6)


def test_resize_draws_sizes_from_rng() -> None:
    images, targets = _clip(T=1)
    shorts = {np.asarray(RandomResize([16, 24, 32])(images, targets, np.random.default_rng(s))[0][0]).shape[0]
              for s in range(20)}
    assert shorts == {16, 24, 32}


def test_flip_formula_and_probability() -> None:
    images, targets = _clip(T=2)
    _, tg = RandomHorizontalFlip(1.0)(images, targets, np.random.default_rng(0))
    np.testing.assert_array_equal(tg[0]["boxes"][0], [W - 30, 8, W - 10, 28])
    out, tg = RandomHorizontalFlip(0.0)(images, targets, np.random.default_rng(0))
    np.testing.assert_array_equal(tg[0]["boxes"][0], [10, 8, 30, 28])
    np.testing.assert_array_equal(np.asarray(out[0]), images[0])
    flips = sum(
        RandomHorizontalFlip(0.5)(images, targets, np.random.default_rng(s))[1][0]["boxes"][0, 0] != 10
        for s in range(40)
    )
    assert 8 < flips < 32


def test_crop_keeps_key_boxes_and_clips_support_boxes() -> None:
    key_box = (40, 20, 56, 40)
    support_boxes = [(0, 0, 6, 6), (30, 10, 60, 44)]  # the first will likely leave the crop
    images = [_frame(key_box), _frame(support_boxes[1])]
    targets = [_target([key_box]), _target(support_boxes)]
    crop = RandomCropKeepBoxes(1.0, min_scale=0.5)
    dropped = 0
    for seed in range(15):
        out, tg = crop(images, targets, np.random.default_rng(seed))
        h, w = np.asarray(out[0]).shape[:2]
        assert h >= 0.5 * H and w >= 0.5 * W
        np.testing.assert_allclose(tg[0]["boxes"][0], _painted_box(out[0]), atol=0)  # whole and exact
        b = tg[1]["boxes"]
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
        assert np.all(b >= 0) and np.all(b[:, 0::2] <= w) and np.all(b[:, 1::2] <= h)
        big = b[tg[1]["labels"] == 1]
        np.testing.assert_allclose(big[0], _painted_box(out[1]), atol=0)  # clipped to what is visible
        dropped += int(0 not in tg[1]["labels"])
    assert dropped > 0


@pytest.mark.parametrize("key_box", [(40, 20, 56, 40), (2, 10, 62, 30), None])
def test_crop_keep_aspect_holds_the_boxes_at_the_frames_aspect(key_box: tuple[int, int, int, int] | None) -> None:
    images, targets = [_frame(key_box)], [_target([key_box] if key_box else [])]
    crop = RandomCropKeepBoxes(1.0, min_scale=0.5, keep_aspect=True)
    widths = set()
    for seed in range(20):
        out, tg = crop(images, targets, np.random.default_rng(seed))
        h, w = np.asarray(out[0]).shape[:2]
        assert abs(h - w * H / W) <= 1  # one scale for both sides
        assert 0.5 * W <= w <= W
        if key_box:
            np.testing.assert_allclose(tg[0]["boxes"][0], _painted_box(out[0]), atol=0)  # whole and exact
        widths.add(w)
    if key_box == (2, 10, 62, 30):
        assert min(widths) >= 60  # a wide box leaves little room
    else:
        assert len(widths) > 3


def test_crop_without_boxes() -> None:
    images = [_frame(None), _frame(None)]
    targets = [_target([]), _target([])]
    out, tg = RandomCropKeepBoxes(1.0, min_scale=0.7)(images, targets, np.random.default_rng(1))
    h, w = np.asarray(out[0]).shape[:2]
    assert 0.7 * H <= h <= H and 0.7 * W <= w <= W and tg[0]["boxes"].shape == (0, 4)


def test_photometric_same_factors_for_every_frame() -> None:
    box = (10, 8, 30, 28)
    same = [_frame(box) for _ in range(3)]
    targets = [_target([box]) for _ in range(3)]
    jitter = PhotometricJitter(1.0, brightness=0.4, contrast=0.4)
    changed = 0
    for seed in range(5):
        out, tg = jitter(same, targets, np.random.default_rng(seed))
        arrays = [np.asarray(o) for o in out]
        for a in arrays[1:]:
            np.testing.assert_array_equal(a, arrays[0])
        changed += int(not np.array_equal(arrays[0], same[0]))
        assert tg is targets
    assert changed == 5
    # Uniform frames: contrast pivots on the mean and changes nothing, brightness scales by one factor.
    flat = [np.full((8, 8, 3), 100, np.uint8), np.full((8, 8, 3), 50, np.uint8)]
    out, _ = jitter(flat, [_target([]), _target([])], np.random.default_rng(3))
    a, b = float(np.asarray(out[0]).mean()), float(np.asarray(out[1]).mean())
    assert a != 100
    assert abs(a / 100 - b / 50) < 0.02
    out, _ = PhotometricJitter(0.0)(flat, [_target([]), _target([])], np.random.default_rng(3))
    np.testing.assert_array_equal(np.asarray(out[0]), flat[0])


def _pixels(t: torch.Tensor) -> np.ndarray:
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0  # RGB in [0, 1]: the model normalises
    return (t * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def test_tensor_and_cxcywh() -> None:
    images, targets = _clip(T=2)
    targets[1]["boxes"] = np.array([[-5, 10, 20, 30], [70, 0, 80, 10]], dtype=np.float32)  # partly / fully out
    targets[1]["labels"] = np.array([0, 1], dtype=np.int64)
    out, tg = Compose([ToTensor(), ConvertBoxesToCxcywh()])(images, targets, np.random.default_rng(0))
    assert out[0].shape == (3, H, W) and out[0].dtype == torch.float32
    np.testing.assert_array_equal(_pixels(out[0]), images[0])
    torch.testing.assert_close(tg[0]["boxes"], torch.tensor([[20 / W, 18 / H, 20 / W, 20 / H]]))
    assert tg[0]["size"].tolist() == [H, W] and tg[0]["size"].dtype == torch.int64
    torch.testing.assert_close(tg[1]["boxes"], torch.tensor([[10 / W, 20 / H, 20 / W, 20 / H]]))
    assert tg[1]["labels"].tolist() == [0]


@pytest.mark.parametrize("seed", range(5))
def test_train_pipeline_boxes_follow_pixels(seed: int) -> None:
    cfg = DataConfig(train_sizes=[32, 40, 56], max_size=80, hflip=0.5, crop=0.5, photometric=1.0)
    images, targets = _clip()
    out, tg = build_train_transforms(cfg)(images, targets, np.random.default_rng(seed))
    for img, t in zip(out, tg, strict=True):
        h, w = t["size"].tolist()
        assert img.shape == (3, h, w) and min(h, w) in (32, 40, 56) and max(h, w) <= 80
        cx, cy, bw, bh = t["boxes"][0].tolist()
        box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        np.testing.assert_allclose(box, _painted_box(_pixels(img)), atol=1.5)
        torch.testing.assert_close(img, out[0])


def test_eval_pipeline_is_deterministic() -> None:
    cfg = DataConfig(test_size=24, max_size=200)
    images, targets = _clip(T=1)
    a, ta = build_eval_transforms(cfg)(images, targets, np.random.default_rng(0))
    b, tb = build_eval_transforms(cfg)(images, targets, np.random.default_rng(99))
    assert a[0].shape == (3, 24, 32)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(ta[0]["boxes"], tb[0]["boxes"])


@pytest.mark.parametrize(
    ("override", "key"),
    [({"hflip": 1.5}, "data.hflip"), ({"crop": -0.1}, "data.crop"), ({"train_sizes": []}, "data.train_sizes")],
)
def test_train_builder_rejects_bad_config(override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_train_transforms(DataConfig(**override))


def test_eval_builder_rejects_bad_test_size() -> None:
    with pytest.raises(ConfigError, match="data.test_size"):
        build_eval_transforms(DataConfig(test_size=0))
