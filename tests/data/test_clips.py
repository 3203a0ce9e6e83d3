"""Clip sampling: support frame positions in every mode, and the ClipDataset items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from v2idetr.config import DataConfig
from v2idetr.data.clips import ClipDataset, support_frame_indices
from v2idetr.data.collate import collate_clips
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.data.transforms import build_train_transforms
from v2idetr.errors import ConfigError, DatasetError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- support_frame_indices: deterministic modes -------------------------------------------------


@pytest.mark.parametrize(
    ("n", "key", "T", "stride", "expected"),
    [
        (10, 5, 5, 1, [5, 3, 4, 6, 7]),  # middle: symmetric
        (10, 5, 3, 2, [5, 3, 7]),
        (10, 5, 4, 1, [5, 3, 4, 6]),  # even T: the past gets the extra frame
        (10, 5, 2, 1, [5, 4]),
        (10, 0, 5, 1, [0, 0, 0, 1, 2]),  # start: clamped at frame 0 (the key frame repeats)
        (10, 1, 5, 1, [1, 0, 0, 2, 3]),
        (10, 9, 5, 1, [9, 7, 8, 9, 9]),  # end: clamped at the last frame
        (10, 9, 3, 3, [9, 6, 9]),
        (1, 0, 3, 1, [0, 0, 0]),  # single-frame video
        (2, 0, 3, 1, [0, 0, 1]),
        (2, 1, 3, 1, [1, 0, 1]),
        (10, 4, 1, 1, [4]),
    ],
)
def test_adjacent(n: int, key: int, T: int, stride: int, expected: list[int]) -> None:
    assert support_frame_indices(n, key, T, "adjacent", window=8, stride=stride, rng=rng()) == expected


@pytest.mark.parametrize(
    ("n", "key", "T", "stride", "expected"),
    [
        (10, 5, 3, 1, [5, 3, 4]),
        (10, 9, 4, 2, [9, 3, 5, 7]),
        (10, 0, 3, 1, [0, 0, 0]),  # start: clamped at frame 0
        (10, 1, 4, 1, [1, 0, 0, 0]),
        (10, 9, 3, 1, [9, 7, 8]),  # end: causal, nothing after the key frame
        (1, 0, 4, 1, [0, 0, 0, 0]),
        (2, 1, 3, 1, [1, 0, 0]),
        (2, 0, 2, 1, [0, 0]),
    ],
)
def test_past(n: int, key: int, T: int, stride: int, expected: list[int]) -> None:
    assert support_frame_indices(n, key, T, "past", window=8, stride=stride, rng=rng()) == expected


# --- random and global ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [0, 10, 29])
def test_random_within_window_distinct_and_sorted(key: int) -> None:
    n, window, T = 30, 4, 5
    seen: set[int] = set()
    for seed in range(40):
        out = support_frame_indices(n, key, T, "random", window=window, stride=1, rng=rng(seed))
        assert out[0] == key and len(out) == T
        support = out[1:]
        assert support == sorted(support)
        assert all(abs(p - key) <= window and 0 <= p < n for p in support)
        assert key not in support
        assert len(set(support)) == T - 1
        seen.update(support)
    reachable = {p for p in range(max(0, key - window), min(n, key + window + 1))} - {key}
    assert seen == reachable  # uniform draws reach every frame in the window


def test_random_is_deterministic_given_rng() -> None:
    a = support_frame_indices(50, 20, 6, "random", window=10, stride=1, rng=rng(3))
    b = support_frame_indices(50, 20, 6, "random", window=10, stride=1, rng=rng(3))
    draws = {tuple(support_frame_indices(50, 20, 6, "random", window=10, stride=1, rng=rng(s))) for s in range(10)}
    assert a == b
    assert len(draws) > 1


def test_random_short_video_uses_every_other_frame_then_repeats() -> None:
    out = support_frame_indices(3, 1, 5, "random", window=8, stride=1, rng=rng(0))
    assert out[0] == 1 and len(out) == 5
    assert {0, 2} <= set(out[1:])  # every non-key frame is used before anything repeats
    assert all(0 <= p < 3 for p in out)
    assert out[1:] == sorted(out[1:])


@pytest.mark.parametrize("mode", ["random", "global"])
def test_random_modes_on_tiny_videos(mode: str) -> None:
    assert support_frame_indices(1, 0, 4, mode, window=8, stride=1, rng=rng()) == [0, 0, 0, 0]
    assert support_frame_indices(2, 0, 2, mode, window=8, stride=1, rng=rng()) == [0, 1]
    assert support_frame_indices(2, 1, 2, mode, window=8, stride=1, rng=rng()) == [1, 0]
    out = support_frame_indices(2, 0, 4, mode, window=8, stride=1, rng=rng())
    assert out[0] == 0 and 1 in out[1:] and set(out) <= {0, 1}


@pytest.mark.parametrize("key", [0, 50, 99])
def test_global_anywhere_in_video(key: int) -> None:
    seen: set[int] = set()
    for seed in range(30):
        out = support_frame_indices(100, key, 6, "global", window=2, stride=1, rng=rng(seed))
        assert out[0] == key and len(set(out[1:])) == 5 and key not in out[1:]
        assert all(0 <= p < 100 for p in out)
        seen.update(out[1:])
    assert max(abs(p - key) for p in seen) > 10  # not limited by window
    assert min(seen) < 20 or max(seen) > 80


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        support_frame_indices(5, 0, 2, "future", 2, 1, rng())
    with pytest.raises(ValueError, match="key"):
        support_frame_indices(5, 5, 2, "adjacent", 2, 1, rng())


# --- ClipDataset --------------------------------------------------------------------------------


def _make_index(tmp_path: Path, lengths: tuple[int, ...] = (6, 1, 3), size: tuple[int, int] = (20, 24)) -> DatasetIndex:
    """Each frame is a uniform image whose red channel encodes its video and green its frame_id.

    frame_ids start at 10 and step by 5 so that offsets differ from positions.
    """
    h, w = size
    videos, image_id = [], 1
    for v, length in enumerate(lengths):
        frames = []
        for p in range(length):
            fid = 10 + 5 * p
            path = tmp_path / f"v{v}_{p}.png"
            Image.fromarray(np.full((h, w, 3), (40 * v + 20, 3 * p + 10, 128), dtype=np.uint8)).save(path)
            boxes = np.array([[2.0, 3.0, 12.0, 15.0]], dtype=np.float32) if p % 2 == 0 else np.zeros((0, 4), np.float32)
            labels = np.zeros((len(boxes),), dtype=np.int64)
            frames.append(
                FrameRecord(image_id, 100 + v, fid, path, w, h, boxes=boxes, labels=labels)
            )
            image_id += 1
        videos.append(VideoRecord(video_id=100 + v, name=f"video{v}", frames=frames))
    return DatasetIndex(videos=videos, class_names=["lesion"], category_ids=[1])


def _decode_colour(images: torch.Tensor) -> list[tuple[int, int]]:
    """(video, frame position) of every frame of an item, read back from its colour."""
    out = []
    for frame in images:
        rgb = (frame * 255).mean(dim=(1, 2))
        out.append((round((rgb[0].item() - 20) / 40), round((rgb[1].item() - 10) / 3)))
    return out


def test_items_key_first_same_video_offsets(tmp_path: Path) -> None:
    index = _make_index(tmp_path)
    ds = ClipDataset(index, num_frames=3, mode="adjacent", all_frame_targets=True)
    assert len(ds) == 10
    keys = ds.key_frames
    assert [f.image_id for f in keys] == list(range(1, 11))
    for i in range(len(ds)):
        item = ds[i]
        key = keys[i]
        assert item["images"].shape == (3, 3, 20, 24) and item["images"].dtype == torch.float32
        frames = _decode_colour(item["images"])
        v, p = frames[0]
        assert index.videos[v].frames[p] is key
        assert all(fv == v for fv, _ in frames)  # support frames from the key's video only
        positions = [fp for _, fp in frames]
        assert positions == support_frame_indices(len(index.videos[v].frames), p, 3, "adjacent", 8, 1, rng())
        assert item["frame_offsets"].dtype == torch.int64
        assert item["frame_offsets"].tolist() == [5 * (q - p) for q in positions]
        t = item["target"]
        assert int(t["image_id"]) == key.image_id and t["image_id"].dtype == torch.int64
        assert t["orig_size"].tolist() == [20, 24] and t["size"].tolist() == [20, 24]
        assert t["boxes"].shape == (len(key.boxes), 4) and t["labels"].dtype == torch.int64
        if len(key.boxes):
            expected = torch.tensor([7.0 / 24, 9.0 / 20, 10.0 / 24, 12.0 / 20])
            torch.testing.assert_close(t["boxes"][0], expected)
        assert len(item["frame_targets"]) == 3
        for ft, q in zip(item["frame_targets"], positions, strict=True):
            assert int(ft["image_id"]) == index.videos[v].frames[q].image_id


def test_key_filter_and_single_frame_clips(tmp_path: Path) -> None:
    index = _make_index(tmp_path)
    ds = ClipDataset(index, num_frames=1, key_filter=lambda f: not f.is_negative)
    assert [f.image_id for f in ds.key_frames] == [f.image_id for f in index.frames() if len(f.boxes)]
    item = ds[0]
    assert item["images"].shape == (1, 3, 20, 24) and "frame_targets" not in item
    assert item["frame_offsets"].tolist() == [0]


def _clip_signature(ds: ClipDataset, i: int) -> tuple:
    item = ds[i]
    return tuple(_decode_colour(item["images"])), tuple(item["images"].shape), tuple(item["target"]["boxes"].flatten().tolist())


def test_deterministic_across_instances_and_epochs(tmp_path: Path) -> None:
    index = _make_index(tmp_path, lengths=(12,), size=(24, 32))
    cfg = DataConfig(train_sizes=[16, 20, 24], max_size=64, hflip=0.5, crop=0.5, photometric=0.0)

    def make(seed: int = 0) -> ClipDataset:
        return ClipDataset(index, num_frames=4, mode="random", window=5, transforms=build_train_transforms(cfg), seed=seed)

    a, b = make(), make()
    a.set_epoch(3)
    b.set_epoch(3)
    for i in [7, 0, 11, 4]:  # any order: each item owns its rng
        assert _clip_signature(a, i) == _clip_signature(b, i)
    epoch3 = [_clip_signature(a, i) for i in range(len(a))]
    a.set_epoch(4)
    epoch4 = [_clip_signature(a, i) for i in range(len(a))]
    assert epoch3 != epoch4
    a.set_epoch(3)
    assert [_clip_signature(a, i) for i in range(len(a))] == epoch3  # a resumed epoch repeats itself
    other_seed = make(seed=1)
    other_seed.set_epoch(3)
    assert [_clip_signature(other_seed, i) for i in range(len(a))] != epoch3


def test_a_batch_short_side_replaces_the_clips_own_draw_and_nothing_else(tmp_path: Path) -> None:
    index = _make_index(tmp_path, lengths=(12,), size=(24, 32))
    cfg = DataConfig(train_sizes=[16, 20, 24], max_size=64, hflip=0.5, crop=0.0, photometric=0.5)
    ds = ClipDataset(index, num_frames=2, mode="random", window=4, transforms=build_train_transforms(cfg), seed=3)
    own = [ds[(1, i)] for i in range(len(ds))]
    assert len({int(item["images"].shape[-2]) for item in own}) > 1  # each clip drew its own
    for i, item in enumerate(own):
        given = ds[(1, i, 20)]
        assert given["images"].shape[-2:] == (20, 27)
        assert _decode_colour(given["images"]) == _decode_colour(item["images"])  # the same clip,
        assert torch.allclose(given["target"]["boxes"], item["target"]["boxes"])  # flipped alike
    with pytest.raises(ValueError, match="not one of the sizes"):
        ds[(1, 0, 18)]


def test_frames_of_different_size_in_a_clip(tmp_path: Path) -> None:
    index = _make_index(tmp_path, lengths=(2,))
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(index.videos[0].frames[1].path)
    ds = ClipDataset(index, num_frames=2)
    with pytest.raises(DatasetError, match=r"v0_0\.png.*differs.*v0_1\.png"):
        ds[1]  # key v0_1 (10 x 10), support v0_0 (20 x 24)


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    index = _make_index(tmp_path, lengths=(1,))
    with pytest.raises(ConfigError, match="clip_mode"):
        ClipDataset(index, num_frames=2, mode="sideways")
    with pytest.raises(ConfigError, match="num_frames"):
        ClipDataset(index, num_frames=0)
    with pytest.raises(ConfigError, match="stride"):
        ClipDataset(index, num_frames=2, stride=0)


def test_batches_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    index = _make_index(tmp_path, lengths=(5, 4), size=(24, 32))
    cfg = DataConfig(train_sizes=[16, 24], max_size=48, hflip=0.5, crop=0.5, photometric=0.5)
    ds = ClipDataset(index, num_frames=3, mode="global", transforms=build_train_transforms(cfg), seed=5)
    ds.set_epoch(2)

    def run(workers: int) -> list:
        loader = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate_clips)
        return [(b.images, b.masks, b.frame_offsets, [t["boxes"] for t in b.targets]) for b in loader]

    serial, parallel = run(0), run(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        for x, y in zip(a[:3], b[:3], strict=True):
            assert torch.equal(x, y)
        for x, y in zip(a[3], b[3], strict=True):
            assert torch.equal(x, y)
