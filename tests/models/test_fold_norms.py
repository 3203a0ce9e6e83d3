"""Folding the backbone's batch norms for inference: the same outputs, no batch norm left, and a
network whose norms do not follow their convolutions is left alone."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.layers import FrozenBatchNormAct2d
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from v2idetr import api
from v2idetr.config import load_config
from v2idetr.deploy.runtime import Detector
from v2idetr.models.build import build_model
from v2idetr.models.fold_norms import fold_backbone_norms

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d, FrozenBatchNormAct2d)


def _randomise_norms(model: nn.Module) -> None:
    """Statistics and affine parameters far from identity, so a wrong fold cannot pass unnoticed."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NORMS):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


@pytest.mark.parametrize(("config", "overrides"), [
    ("configs/student-lite.yaml", ["model.backbone_weights=none"]),  # timm, frozen norm+activation layers
    ("configs/student-tiny.yaml", []),  # torchvision ResNet-18, frozen batch norms
    ("configs/student-tiny.yaml", ["model.freeze_backbone_bn=false", "model.backbone_stages=4"]),  # trainable ones
])
def test_folded_model_gives_the_same_outputs_without_batch_norms(config: str, overrides: list[str]) -> None:
    model = build_model(load_config(config, overrides), num_classes=2).eval()
    _randomise_norms(model.backbone.body)
    images = torch.rand(2, 3, 96, 80)
    masks = torch.zeros(2, 96, 80, dtype=torch.bool)
    masks[1, 64:] = True
    with torch.no_grad():
        before = model(images, masks)
        fold_backbone_norms(model)
        after = model(images, masks)
    assert not [m for m in model.backbone.body.modules() if isinstance(m, NORMS)]
    for key in ("pred_logits", "pred_boxes"):
        assert torch.allclose(before[key], after[key], rtol=1e-4, atol=1e-4), key


class _NormNotAfterConv(nn.Module):
    """Registers ``conv_a, norm, conv_b`` but normalises ``conv_b``'s output: a fold by registration
    order would put the norm into the wrong convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 40, 3, stride=8, padding=1)
        self.norm = nn.BatchNorm2d(40)
        self.conv_b = nn.Conv2d(3, 40, 3, stride=8, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv_a(x) + self.norm(self.conv_b(x))]


def test_a_fold_that_changes_the_outputs_is_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    model = build_model(load_config("configs/student-lite.yaml", ["model.backbone_weights=none"]), 2).eval()
    model.backbone.body = tricky = _NormNotAfterConv()
    _randomise_norms(tricky)
    with caplog.at_level(logging.WARNING):
        fold_backbone_norms(model)
    assert model.backbone.body is tricky and isinstance(tricky.norm, nn.BatchNorm2d)
    assert any("kept them unfolded" in r.message for r in caplog.records)


def test_detector_folds_a_copy_and_detects_as_before(lite_checkpoint: Path) -> None:
    """What ``Detector`` runs is folded, the model given to it is not, the detections do not change,
    and loading does not move the global RNG (training and benchmarks rely on it)."""
    model, cfg, meta = api.load_model(lite_checkpoint)
    frame = np.random.default_rng(0).integers(0, 255, (120, 150, 3), dtype=np.uint8)
    expected = torch.manual_seed(3).initial_seed(), torch.rand(1)
    torch.manual_seed(3)
    folded = Detector(model, cfg, meta, device="cpu", score_thresh=0.0, nms_iou=1.0)
    assert torch.equal(torch.rand(1), expected[1])
    plain = Detector(model, cfg, meta, device="cpu", score_thresh=0.0, nms_iou=1.0, fold_norms=False)
    assert any(isinstance(m, NORMS) for m in model.modules())
    assert not any(isinstance(m, NORMS) for m in folded.model.modules())
    a, b = folded(frame), plain(frame)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-4, atol=1e-2)
