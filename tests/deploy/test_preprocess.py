"""Frames of every accepted kind become the same padded batch; resizing is evaluation's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from v2idetr.data.transforms import RandomResize
from v2idetr.deploy.preprocess import as_rgb_array, prepare_batch, split_frames


def _frame(h: int = 30, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_numpy_pil_and_tensor_frames_agree() -> None:
    frame = _frame()
    from_pil = as_rgb_array(Image.fromarray(frame))
    from_uint8 = as_rgb_array(torch.from_numpy(frame).permute(2, 0, 1))
    from_float = as_rgb_array(torch.from_numpy(frame).permute(2, 0, 1).float() / 255)
    for other in (from_pil, from_uint8, from_float):
        np.testing.assert_array_equal(other, frame)
    grey = as_rgb_array(frame[:, :, 0])
    assert grey.shape == (30, 40, 3) and (grey[:, :, 2] == frame[:, :, 0]).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 4, 5), dtype=np.uint8), "H x W x 3"),
        (torch.zeros(4, 4, 3), r"\[3, H, W\]"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "uint8 or float"),
        ("frame.png", "expected a numpy array"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(bad, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        as_rgb_array(bad)


def test_split_frames_tells_single_from_batch() -> None:
    frame = _frame()
    assert split_frames(frame)[1] is False
    frames, was_batch = split_frames(np.stack([frame, frame]))
    assert was_batch and len(frames) == 2
    frames, was_batch = split_frames(torch.from_numpy(np.stack([frame] * 3)).permute(0, 3, 1, 2))
    assert was_batch and len(frames) == 3 and frames[2].shape == (30, 40, 3)


def test_prepare_batch_resizes_like_evaluation_and_pads() -> None:
    small, wide = _frame(30, 40), _frame(50, 100)
    batch = prepare_batch([small, wide], test_size=64, max_size=96, size_divisor=32)
    # Evaluation's resize: short side 64, long side capped at 96 (aspect kept).
    expected = [RandomResize([64], 96).output_size(h, w, 64) for h, w in ((30, 40), (50, 100))]
    assert batch.image_sizes.tolist() == [list(s) for s in expected]
    assert batch.orig_sizes.tolist() == [[30, 40], [50, 100]]
    assert batch.images.shape == (2, 3, 64, 96)  # largest (64, 85) rounded up to 32
    h, w = expected[1]
    ref = np.asarray(Image.fromarray(wide).resize((w, h), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(batch.images[1, :, :h, :w].permute(1, 2, 0).numpy(), ref / 255.0, atol=1e-6)
    assert batch.images[1, :, h:, :].abs().sum() == 0 and batch.images[1, :, :, w:].abs().sum() == 0


def test_prepare_batch_fixed_size_refuses_frames_that_do_not_fit() -> None:
    batch = prepare_batch([_frame(30, 40)], test_size=64, max_size=64, pad_to=(64, 64))
    assert batch.images.shape == (1, 3, 64, 64) and batch.image_sizes.tolist() == [[48, 64]]
    with pytest.raises(ValueError, match="do not fit"):
        prepare_batch([_frame(30, 40)], test_size=64, max_size=None, pad_to=(64, 64))
