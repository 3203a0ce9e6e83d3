"""Batching clips: padding, masks, frame offsets and moving a Batch between devices."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from v2idetr.data.collate import Batch, collate_clips


def _sample(T: int, h: int, w: int, image_id: int, frame_targets: bool = False) -> dict:
    def target(i: int) -> dict:
        return {
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]),
            "labels": torch.tensor([1]),
            "image_id": torch.tensor(i),
            "orig_size": torch.tensor([2 * h, 2 * w]),
            "size": torch.tensor([h, w]),
        }

    sample = {
        "images": torch.rand(T, 3, h, w) + 1.0,  # never zero, so padding is recognisable
        "target": target(image_id),
        "frame_offsets": torch.arange(T, dtype=torch.int64) - T // 2,
    }
    if frame_targets:
        sample["frame_targets"] = [target(image_id * 10 + t) for t in range(T)]
    return sample


def test_shapes_padding_and_masks() -> None:
    samples = [_sample(3, 20, 30, 1), _sample(3, 40, 25, 2)]
    batch = collate_clips(samples)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.images.shape == (2, 3, 3, 64, 32)  # max (40, 30) rounded up to multiples of 32
    assert batch.images.dtype == torch.float32 and batch.masks.dtype == torch.bool
    assert batch.masks.shape == (2, 64, 32)
    for b, s in enumerate(samples):
        h, w = s["images"].shape[-2:]
        torch.testing.assert_close(batch.images[b, :, :, :h, :w], s["images"])
        valid = batch.images[b].abs().sum(dim=(0, 1)) > 0  # padding is exactly zero
        assert torch.equal(batch.masks[b], ~valid)
        assert not batch.masks[b, :h, :w].any() and batch.masks[b].sum() == 64 * 32 - h * w
    assert batch.frame_offsets.tolist() == [[-1, 0, 1], [-1, 0, 1]]
    assert [int(t["image_id"]) for t in batch.targets] == [1, 2]
    assert batch.frame_targets is None


def test_no_rounding_with_divisor_one() -> None:
    batch = collate_clips([_sample(1, 20, 30, 1), _sample(1, 17, 33, 2)], size_divisor=1)
    assert batch.images.shape == (2, 1, 3, 20, 33)
    assert batch.masks[1, 17:, :].all() and not batch.masks[1, :17, :].any()
    assert batch.masks[0, :, 30:].all() and not batch.masks[0, :, :30].any()


def test_frame_targets_and_mismatches() -> None:
    batch = collate_clips([_sample(2, 8, 8, 1, True), _sample(2, 8, 8, 2, True)])
    assert batch.frame_targets is not None
    assert [[int(t["image_id"]) for t in clip] for clip in batch.frame_targets] == [[10, 11], [20, 21]]
    with pytest.raises(ValueError, match="same number of frames"):
        collate_clips([_sample(2, 8, 8, 1), _sample(3, 8, 8, 2)])
    with pytest.raises(ValueError, match="frame_targets"):
        collate_clips([_sample(2, 8, 8, 1, True), _sample(2, 8, 8, 2)])
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])


def test_to_moves_every_tensor() -> None:
    batch = collate_clips([_sample(2, 8, 8, 1, True), _sample(2, 8, 8, 2, True)])
    moved = batch.to("meta")
    assert moved.images.device.type == "meta" and moved.masks.device.type == "meta"
    assert moved.frame_offsets.device.type == "meta"
    assert all(v.device.type == "meta" for t in moved.targets for v in t.values())
    assert all(v.device.type == "meta" for clip in moved.frame_targets for t in clip for v in t.values())
    assert batch.images.device.type == "cpu"  # the original is left alone
    wider = batch._apply(lambda x: x.double() if x.is_floating_point() else x)
    assert wider.targets[0]["boxes"].dtype == torch.float64 and wider.targets[0]["labels"].dtype == torch.int64


def test_dataloader_with_collate() -> None:
    data = [_sample(2, 8 + i, 12, i) for i in range(5)]
    loader = DataLoader(data, batch_size=2, collate_fn=collate_clips, pin_memory=torch.cuda.is_available())
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [int(t["image_id"]) for b in batches for t in b.targets] == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory() -> None:
    batch = collate_clips([_sample(2, 8, 8, 1, True)]).pin_memory()
    assert batch.images.is_pinned() and batch.targets[0]["boxes"].is_pinned()
    assert batch.frame_targets[0][1]["labels"].is_pinned()
