"""ResNet backbone and the multi-scale input projections of the deformable DETR.

``Backbone(images [B, 3, H, W], masks [B, H, W]) -> FeatureMaps`` with ``num_feature_levels``
levels, all of width ``hidden_dim``: the ResNet's C3, C4(, C5) (strides 8, 16(, 32)) projected by
1x1 conv + GroupNorm, then extra levels made by 3x3 stride-2 conv + GroupNorm, each halving the
resolution again. The ResNet trunk is ``Backbone.body`` (a torchvision ResNet, so its state dict
keys are torchvision's); the trainer gives parameters named ``backbone.body.*`` the backbone LR.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models.position_encoding import PositionEmbeddingSine

log = logging.getLogger(__name__)

_RESNETS = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights", (128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights", (128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", (512, 1024, 2048)),
}


@dataclass
class FeatureMaps:
    """Multi-scale features of one batch of images (finest level first).

    srcs   L x [B, D, h_l, w_l]  projected features
    masks  L x [B, h_l, w_l]     bool, True on padding
    pos    L x [B, D, h_l, w_l]  sine position encoding (no level embedding yet)
    """

    srcs: list[Tensor]
    masks: list[Tensor]
    pos: list[Tensor]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of ``channels`` below 32."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _load_state_dict(path: str) -> dict[str, Tensor]:
    """A ResNet state dict from a local file; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"config key 'model.backbone_weights' = {path!r}: expected 'none', 'imagenet' or the path of "
            "a ResNet state dict file, and no such file exists"
        )
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        raise ConfigError(f"{file}: model.backbone_weights could not be read as a state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(
            f"{file}: model.backbone_weights: expected a dict of tensors, got {type(state).__name__}"
        )
    return state


def build_resnet(name: str, weights: str, frozen_bn: bool) -> nn.Module:
    """A torchvision ResNet with random, ImageNet (torchvision download) or local weights."""
    if name not in _RESNETS:
        raise ConfigError(f"config key 'model.backbone' = {name!r}: expected one of {', '.join(_RESNETS)}")
    factory, enum_name, _ = _RESNETS[name]
    norm_layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    if weights == "imagenet":
        enum = getattr(torchvision.models, enum_name).IMAGENET1K_V1
        try:
            return factory(weights=enum, norm_layer=norm_layer)
        except OSError as exc:  # urllib's URLError included: no connection, proxy, DNS
            raise ConfigError(
                f"model.backbone_weights = 'imagenet': torchvision could not download the {name} weights "
                f"({exc}). Offline, give a local file (model.backbone_weights=/path/{name}.pth) or 'none'"
            ) from exc
    net = factory(weights=None, norm_layer=norm_layer)
    if weights != "none":
        state = _load_state_dict(weights)
        state = {k.removeprefix("backbone.body.").removeprefix("body."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when not strict
            raise ConfigError(
                f"{weights}: model.backbone_weights does not fit a torchvision {name}: {exc}"
            ) from exc
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ConfigError(
                f"{weights}: model.backbone_weights does not fit a torchvision {name}: "
                f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
    return net


class Backbone(nn.Module):
    """ResNet trunk + projections to ``hidden_dim`` + sine position encoding.

    With pretrained weights the stem and ``layer1`` are frozen (as in DETR: they change little and
    cost the most backward time at full resolution); trained from scratch, everything learns.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.backbone_stages not in (3, 4):
            raise ConfigError(f"config key 'model.backbone_stages' = {cfg.backbone_stages}: expected 3 or 4")
        if cfg.num_feature_levels < 1:
            raise ConfigError(
                f"config key 'model.num_feature_levels' = {cfg.num_feature_levels}: expected >= 1"
            )
        if cfg.hidden_dim % 4:
            raise ConfigError(f"config key 'model.hidden_dim' = {cfg.hidden_dim}: expected a multiple of 4")
        self.body = build_resnet(cfg.backbone, cfg.backbone_weights, cfg.freeze_backbone_bn)
        self.body.fc = nn.Identity()
        self.body.avgpool = nn.Identity()
        if cfg.backbone_stages == 3:
            self.body.layer4 = nn.Identity()
        if cfg.backbone_weights != "none":
            for name, param in self.body.named_parameters():
                if not name.startswith(("layer2", "layer3", "layer4")):
                    param.requires_grad_(False)
        self.num_stages = cfg.backbone_stages
        channels = list(_RESNETS[cfg.backbone][2][: cfg.backbone_stages - 1])
        strides = [8, 16, 32][: cfg.backbone_stages - 1]
        # With fewer levels than backbone outputs, keep the coarsest (Deformable DETR's single scale is C5).
        self.first_used = max(0, len(channels) - cfg.num_feature_levels)
        used = channels[self.first_used :]
        d = cfg.hidden_dim
        proj: list[nn.Module] = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), group_norm(d)) for c in used]
        in_ch = channels[-1]
        for _ in range(cfg.num_feature_levels - len(used)):
            proj.append(nn.Sequential(nn.Conv2d(in_ch, d, kernel_size=3, stride=2, padding=1), group_norm(d)))
            in_ch = d
        self.input_proj = nn.ModuleList(proj)
        self.num_backbone_levels = len(used)
        self.strides = strides[self.first_used :] + [
            strides[-1] * 2 ** (i + 1) for i in range(cfg.num_feature_levels - len(used))
        ]
        self.position = PositionEmbeddingSine(d // 2)
        for layer in self.input_proj:
            nn.init.xavier_uniform_(layer[0].weight, gain=1)
            nn.init.zeros_(layer[0].bias)

    def trunk(self, images: Tensor) -> list[Tensor]:
        """``images [B, 3, H, W]`` -> C3, C4(, C5) raw ResNet features (strides 8, 16(, 32))."""
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        c3 = b.layer2(b.layer1(x))
        c4 = b.layer3(c3)
        return [c3, c4] if self.num_stages == 3 else [c3, c4, b.layer4(c4)]

    def forward(self, images: Tensor, masks: Tensor) -> FeatureMaps:
        """``images [B, 3, H, W]``, ``masks [B, H, W]`` (True on padding) -> ``FeatureMaps``."""
        feats = self.trunk(images)[self.first_used :]
        srcs = [proj(f) for proj, f in zip(self.input_proj, feats, strict=False)]
        x = feats[-1]
        for proj in self.input_proj[len(feats) :]:
            x = proj(x)
            srcs.append(x)
        level_masks = [
            F.interpolate(masks[:, None].to(torch.float32), size=s.shape[-2:], mode="nearest")[:, 0].to(
                torch.bool
            )
            for s in srcs
        ]
        pos = [self.position(m).to(s.dtype) for s, m in zip(srcs, level_masks, strict=True)]
        return FeatureMaps(srcs=srcs, masks=level_masks, pos=pos)
