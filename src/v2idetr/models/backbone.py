"""Backbone (ResNet or EfficientNet-Lite0) and the multi-scale input projections of the deformable DETR.

``Backbone(images [B, 3, H, W], masks [B, H, W]) -> FeatureMaps`` with ``num_feature_levels``
levels, all of width ``hidden_dim``: the trunk's C3, C4(, C5) (strides 8, 16(, 32)) projected by
1x1 conv + GroupNorm, then extra levels made by 3x3 stride-2 conv + GroupNorm, each halving the
resolution again. The trunk is ``Backbone.body`` (a torchvision ResNet or timm's Lite0 feature
net, so its state dict keys are theirs); the trainer gives parameters named ``backbone.body.*`` the
backbone LR.

Images come in as RGB in ``[0, 1]``, zero-padded; the backbone applies the normalisation its trunk
was trained with (ImageNet mean/std for ResNets, 0.5/0.5 for Lite) and keeps the padding at zero.
Because it is part of the model, training, ``eval``, ``predict``, the Python API and the ONNX graph
cannot disagree about it.
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
from v2idetr.models import efficientnet_lite
from v2idetr.models.position_encoding import PositionEmbeddingSine

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


def input_normalisation(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of RGB in ``[0, 1]`` that the trunk ``backbone`` was trained with."""
    if backbone == efficientnet_lite.NAME:
        return efficientnet_lite.MEAN, efficientnet_lite.STD
    return IMAGENET_MEAN, IMAGENET_STD


def _load_state_dict(path: str) -> dict[str, Tensor]:
    """A state dict from a local file; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"config key 'model.backbone_weights' = {path!r}: expected 'none', 'imagenet' or the path of "
            "a state dict file, and no such file exists"
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
            file = enum.url.rsplit("/", 1)[-1]
            raise ConfigError(
                f"model.backbone_weights = 'imagenet': torchvision could not download the {name} weights "
                f"({exc}). Offline, copy {file} ({enum.url}) to this machine and give it as "
                f"model.backbone_weights=/path/{file}, or use the backbone that installs with v2idetr: "
                "model.backbone=efficientnet_lite0 model.backbone_weights=imagenet (configs/student-lite.yaml)"
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


def _resnet_frozen_when_pretrained(name: str) -> bool:
    """Parameters a pretrained ResNet keeps as loaded: the stem and ``layer1``."""
    return not name.startswith(("layer2", "layer3", "layer4"))


class Backbone(nn.Module):
    """Trunk + projections to ``hidden_dim`` + sine position encoding.

    With pretrained weights the stem and the first stage(s) are frozen (ResNet: ``layer1``; Lite:
    the stride-2 and stride-4 blocks; as in DETR: they change little and cost the most backward
    time at full resolution); trained from scratch, everything learns. ``model.freeze_backbone``
    freezes the whole trunk: a teacher started from its image baseline's weights skips the trunk's
    backward pass for every frame of its clips, the largest share of a CPU training step.
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
        self.is_lite = cfg.backbone == efficientnet_lite.NAME
        if self.is_lite:
            self.body = efficientnet_lite.build_trunk(
                cfg.backbone_weights, cfg.freeze_backbone_bn, cfg.backbone_stages, _load_state_dict
            )
            all_channels = efficientnet_lite.CHANNELS
        else:
            self.body = build_resnet(cfg.backbone, cfg.backbone_weights, cfg.freeze_backbone_bn)
            self.body.fc = nn.Identity()
            self.body.avgpool = nn.Identity()
            if cfg.backbone_stages == 3:
                self.body.layer4 = nn.Identity()
            all_channels = _RESNETS[cfg.backbone][2]
        self.freeze_trunk(cfg, pretrained=cfg.backbone_weights != "none")
        mean, std = input_normalisation(cfg.backbone)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.num_stages = cfg.backbone_stages
        channels = list(all_channels[: cfg.backbone_stages - 1])
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

    def freeze_trunk(self, cfg: ModelConfig, pretrained: bool) -> None:
        """Stop the gradients of the trunk's parameters that ``cfg`` keeps fixed: all with
        ``freeze_backbone``, a ``pretrained`` trunk's stem and first stages with ``freeze_backbone_stem``.
        `bench speed --train` calls it on a randomly initialised trunk to time what a pretrained one trains."""
        self.frozen_trunk = cfg.freeze_backbone  # `train` keeps such a trunk in eval mode
        if cfg.freeze_backbone:
            self.body.requires_grad_(False)
        elif pretrained and cfg.freeze_backbone_stem:
            frozen = efficientnet_lite.frozen_when_pretrained if self.is_lite else _resnet_frozen_when_pretrained
            for name, param in self.body.named_parameters():
                if frozen(name):
                    param.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        """A frozen trunk stays in eval mode, so trainable batch norms keep their statistics too."""
        super().train(mode)
        if self.frozen_trunk:
            self.body.eval()
        return self

    def normalise(self, images: Tensor, masks: Tensor) -> Tensor:
        """RGB in ``[0, 1]`` -> the trunk's normalisation, with the padding (``masks`` True) at zero."""
        valid = (~masks)[:, None].to(images.dtype)
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype) * valid

    def trunk(self, images: Tensor) -> list[Tensor]:
        """Normalised ``images [B, 3, H, W]`` -> C3, C4(, C5) raw trunk features (strides 8, 16(, 32)).

        On a CPU the trunk runs channels-last: oneDNN's convolutions, depthwise ones above all, are
        faster in that layout (training steps 1.2-1.6x for Lite0 at 256 px, up to 1.1x for ResNet-18
        at 128 px; docs/RESULTS.md). Only the input is converted: the layout follows it through every
        conv, and the weights stay as they are, so checkpoints do not change. On a GPU the layout is
        left alone (not measured there).
        """
        b = self.body
        if images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        if self.is_lite:
            return b(images)
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        c3 = b.layer2(b.layer1(x))
        c4 = b.layer3(c3)
        return [c3, c4] if self.num_stages == 3 else [c3, c4, b.layer4(c4)]

    def forward(self, images: Tensor, masks: Tensor) -> FeatureMaps:
        """``images [B, 3, H, W]`` RGB in ``[0, 1]``, ``masks [B, H, W]`` (True on padding) -> ``FeatureMaps``."""
        feats = self.trunk(self.normalise(images, masks))[self.first_used :]
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
