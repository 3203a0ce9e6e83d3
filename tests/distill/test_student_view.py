"""The student's degraded view of the key frame: what each degradation does, and that only the student sees it."""

from __future__ import annotations

import pytest
import torch

from v2idetr.distill.student_view import KINDS, degrade, degrade_key_frames


def frame(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(3, 32, 32, generator=g)


def test_each_degradation_does_what_its_name_says() -> None:
    img = frame()
    torch.manual_seed(0)
    blurred = degrade(img, "blur")
    assert blurred.shape == img.shape
    assert (blurred[:, 1:] - blurred[:, :-1]).abs().mean() < 0.5 * (img[:, 1:] - img[:, :-1]).abs().mean()
    assert float(blurred.mean()) == pytest.approx(float(img.mean()), abs=0.02)
    assert (degrade(img, "noise") - img).abs().mean() > 0.02
    assert degrade(img, "low_contrast").std() < 0.6 * img.std()
    assert degrade(img, "overexposed").mean() > img.mean() + 0.1
    for kind in KINDS:
        out = degrade(img, kind)
        assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError, match="unknown degradation 'fog'"):
        degrade(img, "fog")


def test_key_frames_are_degraded_on_their_valid_region_only_and_reproducibly() -> None:
    images = torch.zeros(3, 3, 40, 48)
    masks = torch.ones(3, 40, 48, dtype=torch.bool)
    for b, (h, w) in enumerate([(40, 48), (32, 32), (24, 40)]):
        images[b, :, :h, :w] = frame(b).repeat(1, 2, 2)[:, :h, :w]
        masks[b, :h, :w] = False
    assert degrade_key_frames(images, masks, 0.0) is images
    torch.manual_seed(3)
    out = degrade_key_frames(images, masks, 1.0)
    for b in range(3):
        assert not torch.equal(out[b][:, ~masks[b]], images[b][:, ~masks[b]])  # every frame degraded
        assert torch.equal(out[b][:, masks[b]], images[b][:, masks[b]])  # the padding stays as it was
    torch.manual_seed(3)
    assert torch.equal(degrade_key_frames(images, masks, 1.0), out)  # the global generator decides: resumable
    assert images.abs().sum() > 0 and not torch.equal(out, images)
    torch.manual_seed(4)
    changed = [not torch.equal(o, i) for o, i in zip(degrade_key_frames(images.repeat(20, 1, 1, 1),
                                                                         masks.repeat(20, 1, 1), 0.5),
                                                      images.repeat(20, 1, 1, 1), strict=True)]
    assert 10 <= sum(changed) <= 50  # about half of 60
