"""Backbone levels, strides and masks; weight loading; sine position encoding."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models import backbone as backbone_module
from v2idetr.models.backbone import Backbone, group_norm
from v2idetr.models.position_encoding import PositionEmbeddingSine, box_sine_embedding


def _cfg(**kw) -> ModelConfig:
    base = {"backbone": "resnet18", "hidden_dim": 32, "backbone_stages": 3, "num_feature_levels": 3}
    return ModelConfig(**{**base, **kw})


def _padded_batch():
    images = torch.randn(2, 3, 64, 96)
    masks = torch.zeros(2, 64, 96, dtype=torch.bool)
    masks[1, :, 48:] = True  # image 1 is 64 x 48, padded on the right
    masks[1, 32:, :] = True  # ... and 32 rows high
    images[masks[:, None].expand_as(images)] = 0.0
    return images, masks


@pytest.mark.parametrize(
    ("stages", "levels", "strides"),
    [(3, 3, [8, 16, 32]), (3, 4, [8, 16, 32, 64]), (4, 4, [8, 16, 32, 64]), (4, 3, [8, 16, 32])],
)
def test_levels_strides_and_masks(stages, levels, strides):
    backbone = Backbone(_cfg(backbone_stages=stages, num_feature_levels=levels))
    assert backbone.strides == strides
    images, masks = _padded_batch()
    feats = backbone(images, masks)
    assert len(feats.srcs) == len(feats.masks) == len(feats.pos) == levels
    for src, mask, pos, stride in zip(feats.srcs, feats.masks, feats.pos, strides, strict=True):
        h, w = -(-64 // stride), -(-96 // stride)
        assert src.shape == pos.shape == (2, 32, h, w)
        assert mask.shape == (2, h, w) and mask.dtype == torch.bool
        assert not mask[0].any()
        # Image 1 is valid on 32 x 48 pixels: ceil(32 / stride) rows, ceil(48 / stride) columns.
        rows, cols = (~mask[1]).any(1).sum().item(), (~mask[1]).any(0).sum().item()
        assert (rows, cols) == (-(-32 // stride), -(-48 // stride))
        assert (~mask[1]).sum().item() == rows * cols  # the valid part is one top-left rectangle
        assert torch.isfinite(src).all()


def test_three_stages_drop_layer4_and_frozen_bn_follows_config():
    three = Backbone(_cfg(backbone_stages=3))
    assert not any(name.startswith("layer4") for name, _ in three.body.named_parameters())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in three.body.modules())
    plain = Backbone(_cfg(backbone_stages=4, freeze_backbone_bn=False))
    assert any(name.startswith("layer4") for name, _ in plain.body.named_parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.body.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in plain.body.modules())
    # From scratch everything trains.
    assert all(p.requires_grad for p in three.body.parameters())


def test_local_state_dict_is_loaded_and_freezes_stem(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    backbone = Backbone(_cfg(backbone_weights=str(path)))
    torch.testing.assert_close(backbone.body.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    torch.testing.assert_close(backbone.body.bn1.running_var, source.bn1.running_var)
    assert (
        not backbone.body.conv1.weight.requires_grad
        and not backbone.body.layer1[0].conv1.weight.requires_grad
    )
    assert backbone.body.layer2[0].conv1.weight.requires_grad
    unfrozen = Backbone(_cfg(backbone_weights=str(path), freeze_backbone_stem=False))
    assert all(p.requires_grad for p in unfrozen.body.parameters())


def test_cpu_trunk_runs_channels_last_with_contiguous_weights_and_the_same_features():
    backbone = Backbone(_cfg()).eval()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        feats = backbone.trunk(images)
        b = backbone.body
        reference = b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(images)))))))
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)
    assert all(p.is_contiguous() for p in backbone.parameters())  # checkpoints are unchanged
    torch.testing.assert_close(feats[-1], reference, rtol=1e-4, atol=1e-5)


def test_bad_weights_raise_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="backbone_weights"):
        Backbone(_cfg(backbone_weights=str(tmp_path / "missing.pth")))
    extra = tmp_path / "r34.pth"  # resnet34 has more blocks: unexpected keys
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), extra)
    with pytest.raises(ConfigError, match="does not fit"):
        Backbone(_cfg(backbone_weights=str(extra)))
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    reshaped = tmp_path / "bad_shape.pth"
    torch.save(state, reshaped)
    with pytest.raises(ConfigError, match="does not fit"):
        Backbone(_cfg(backbone_weights=str(reshaped)))
    with pytest.raises(ConfigError, match="backbone_stages"):
        Backbone(_cfg(backbone_stages=2))


def test_group_norm_groups_divide_channels():
    for channels, groups in [(256, 32), (64, 32), (48, 16), (100, 4)]:
        assert group_norm(channels).num_groups == groups


def test_position_encoding_of_padded_image_equals_unpadded():
    pe = PositionEmbeddingSine(16)
    padded = torch.zeros(1, 6, 9, dtype=torch.bool)
    padded[:, 4:] = True
    padded[:, :, 5:] = True
    small = torch.zeros(1, 4, 5, dtype=torch.bool)
    torch.testing.assert_close(pe(padded)[:, :, :4, :5], pe(small))
    enc = pe(small)
    assert enc.shape == (1, 32, 4, 5)
    # y features first: they vary down the rows and not along them.
    assert torch.allclose(enc[0, :16, :, 0:1].expand(-1, -1, 5), enc[0, :16])
    assert not torch.allclose(enc[0, :16, 0], enc[0, :16, 1])


def test_box_sine_embedding_separates_coordinates():
    boxes = torch.tensor([[0.2, 0.3, 0.1, 0.4], [0.2, 0.3, 0.1, 0.5]])
    emb = box_sine_embedding(boxes, 8)
    assert emb.shape == (2, 32)
    # Only the height changed: the first three 8-feature blocks (y, x, w) agree, the last differs.
    torch.testing.assert_close(emb[0, :24], emb[1, :24])
    assert not torch.allclose(emb[0, 24:], emb[1, 24:])


def test_offline_imagenet_resnet_names_the_file_to_give_and_the_lite_backbone(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setitem(backbone_module._RESNETS, "resnet18", (offline, "ResNet18_Weights", (128, 256, 512)))
    with pytest.raises(ConfigError) as info:
        Backbone(_cfg(backbone_weights="imagenet"))
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "model.backbone_weights=/path/resnet18-f37072fd.pth" in message
    assert "model.backbone=efficientnet_lite0 model.backbone_weights=imagenet" in message


def test_freeze_backbone_freezes_the_whole_trunk_batch_norm_statistics_included():
    backbone = Backbone(_cfg(freeze_backbone=True, freeze_backbone_bn=False)).train()
    norms = [m for m in backbone.body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert not any(p.requires_grad for p in backbone.body.parameters())
    before = norms[0].running_mean.clone()
    images, masks = _padded_batch()
    sum(s.sum() for s in backbone(images, masks).srcs).backward()
    assert torch.equal(norms[0].running_mean, before)
    assert all(p.grad is None for p in backbone.body.parameters())
    assert all(p.grad is not None for p in backbone.input_proj.parameters())
    trained = Backbone(_cfg(freeze_backbone_bn=False)).train()  # the default: the trunk learns
    assert all(m.training for m in trained.body.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(p.requires_grad for p in trained.body.parameters())
