"""DETR-style `build()`: the model, the criterion (with its matcher) and the post-processor.

The four pieces are built separately so each can be tested and swapped on its own; the trainer
only composes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from v2idetr.config import Config
from v2idetr.errors import ConfigError
from v2idetr.models.criterion import SetCriterion, build_criterion
from v2idetr.models.detector import build_detector
from v2idetr.models.postprocess import PostProcess
from v2idetr.models.teacher import VideoTeacher
from v2idetr.models.transformer import set_activation_checkpointing


@dataclass
class Built:
    model: nn.Module
    criterion: SetCriterion
    postprocess: PostProcess


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The image detector, or for ``model.temporal != none`` the video teacher around it."""
    if num_classes < 1:
        raise ConfigError(
            f"model.num_classes = {num_classes}: expected >= 1 (0 means: take it from the data)"
        )
    if cfg.model.temporal != "none":
        model: nn.Module = VideoTeacher(cfg.model, num_classes, cfg.data.num_frames)
    else:
        model = build_detector(cfg.model, num_classes)
    set_activation_checkpointing(model, cfg.train.activation_checkpointing)
    return model


def build(cfg: Config, num_classes: int) -> Built:
    return Built(
        model=build_model(cfg, num_classes),
        criterion=build_criterion(cfg.loss, num_classes),
        postprocess=PostProcess(num_select=cfg.eval.num_select),
    )
