import pytest
import torch

from v2idetr.distill.masks import foreground_mask, foreground_masks


def test_gaussian_peaks_at_centre_and_falls_off_with_box_size() -> None:
    # box centred on pixel centre (10.5, 8.5) of a 32 x 24 map: cx = 10.5/24, cy = 8.5/32 ... (w, h) = (24, 32)
    h, w = 32, 24
    small = torch.tensor([[10.5 / w, 8.5 / h, 4 / w, 4 / h]])
    large = torch.tensor([[10.5 / w, 8.5 / h, 12 / w, 12 / h]])
    m_small = foreground_mask(small, (h, w))
    m_large = foreground_mask(large, (h, w))
    assert m_small[8, 10] == pytest.approx(1.0)
    assert m_small.max() <= 1.0 and m_small.min() >= 0.0
    # 3 pixels right of the centre: the larger box keeps more weight there
    assert m_large[8, 13] > m_small[8, 13]
    assert m_small[8, 13] < 0.5
    # far away: zero
    assert m_large[30, 22] < 1e-6


def test_binary_mask_equals_the_box() -> None:
    h, w = 20, 30
    # box x in [6, 12], y in [4, 10] pixels
    box = torch.tensor([[9 / w, 7 / h, 6 / w, 6 / h]])
    m = foreground_mask(box, (h, w), mode="binary")
    expected = torch.zeros(h, w)
    expected[4:10, 6:12] = 1  # pixel centres 4.5..9.5 and 6.5..11.5 lie inside
    assert torch.equal(m, expected)


def test_padding_and_valid_ratio_are_respected() -> None:
    # image occupies the left half of a padded 16 x 16 map (valid_w = 0.5)
    box = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # centre of the *image*
    m = foreground_mask(box, (16, 16), valid=(0.5, 1.0), mode="binary")
    cols = m.sum(0).nonzero().flatten()
    assert cols.min() >= 2 and cols.max() <= 5  # x in [2, 6] of the 8 valid columns
    g = foreground_mask(torch.tensor([[0.9, 0.5, 0.9, 0.9]]), (16, 16), valid=(0.5, 1.0))
    assert g[:, 8:].abs().max() == 0  # nothing leaks into the padding


def test_no_boxes_gives_zero_and_batch_levels() -> None:
    targets = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    ratios = torch.ones(2, 2, 2)
    maps = foreground_masks(targets, [(8, 8), (4, 4)], ratios)
    assert [tuple(m.shape) for m in maps] == [(2, 8, 8), (2, 4, 4)]
    assert maps[0][0].sum() == 0 and maps[0][1].sum() > 0


def test_full_mask_covers_every_unpadded_pixel_with_or_without_boxes() -> None:
    targets = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1]])}]
    ratios = torch.tensor([[[0.5, 1.0]], [[1.0, 1.0]]])  # image 0 is padded on its right half
    (maps,) = foreground_masks(targets, [(4, 8)], ratios, mode="full")
    assert maps[0][:, :4].eq(1).all() and maps[0][:, 4:].eq(0).all()
    assert maps[1].eq(1).all()
