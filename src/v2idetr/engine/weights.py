"""Where a model's weights come from: a checkpoint that starts a training run (`train.init_from`, a
student from its teacher) and a checkpoint rebuilt for inference. Both refuse weights that do not fit
the config's model, so a typo'd architecture fails before any work instead of running half-initialised.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from v2idetr.config import Config, config_from_dict
from v2idetr.data.index import DatasetIndex
from v2idetr.devices import resolve_device
from v2idetr.engine.checkpoint import Checkpoint, load_checkpoint
from v2idetr.errors import CheckpointError, ConfigError
from v2idetr.models.build import build_model
from v2idetr.models.teacher import VideoTeacher

log = logging.getLogger(__name__)


def check_frozen_trunk(cfg: Config, starts_from_checkpoint: bool) -> None:
    """``model.freeze_backbone`` keeps the trunk's starting weights: random ones would never learn, and
    pretrained ones never adapt to the frames (worth a warning: it is meant for a run that starts from a
    model trained on them)."""
    if not cfg.model.freeze_backbone or starts_from_checkpoint:
        return
    if cfg.model.backbone_weights != "none":
        log.warning("model.freeze_backbone=true and no train.init_from: the trunk keeps its %s weights and never "
                    "adapts to these frames; start from the image baseline's checkpoint (train.init_from) or set "
                    "model.freeze_backbone=false", cfg.model.backbone_weights)
    else:
        raise ConfigError(
            "config key 'model.freeze_backbone' = true with model.backbone_weights = 'none' and no checkpoint "
            "to start from: the trunk would keep random weights. Start from a trained model (train.init_from, "
            "e.g. the image baseline's checkpoint), give model.backbone_weights, or set model.freeze_backbone=false"
        )


def init_weights_from(model: nn.Module, source_ckpt: str | Path | Checkpoint, train_index: DatasetIndex,
                      key: str = "train.init_from", hint: str = "") -> None:
    """Load a checkpoint's weights into ``model`` before training (``key``: the option that asked).

    An image detector's weights start a teacher's shared detector (its temporal module starts fresh),
    and a teacher's shared detector starts an image model (a student); every other weight must fit
    exactly, so a typo'd architecture fails here instead of training half-initialised."""
    ckpt = source_ckpt if isinstance(source_ckpt, Checkpoint) else load_checkpoint(Path(source_ckpt))
    path = ckpt.path
    where = f"{path} ({key})"
    if ckpt.meta.get("category_ids") != train_index.category_ids:
        raise ConfigError(
            f"{where}: trained on categories {ckpt.meta.get('category_ids')}, data.train has "
            f"{train_index.category_ids}"
        )
    source = ckpt.ema if ckpt.ema is not None else ckpt.model  # the EMA's weights are the evaluated ones
    own = model.state_dict()
    teacher_model, teacher_ckpt = isinstance(model, VideoTeacher), ckpt.kind == "teacher"
    if teacher_model and not teacher_ckpt:
        source = {f"detector.{k}": v for k, v in source.items()}
    elif teacher_ckpt and not teacher_model:
        source = {k.removeprefix("detector."): v for k, v in source.items() if k.startswith("detector.")}
    fresh = [k for k in own if k not in source]
    wrong = [k for k in own if k in source and source[k].shape != own[k].shape]
    unused = [k for k in source if k not in own]
    if wrong or unused or any(not k.startswith("temporal.") for k in fresh):
        raise ConfigError(
            f"{where}: its weights do not fit this config's model (shapes differ: {wrong[:5]}; not in the "
            f"checkpoint: {[k for k in fresh if not k.startswith('temporal.')][:5]}; not in the model: "
            f"{unused[:5]}); only a teacher's temporal module may start fresh{hint}"
        )
    model.load_state_dict({**own, **source})
    log.info("initialised from %s%s", path, " (the temporal module starts fresh)" if fresh else "")


def load_model(
    checkpoint: str | Path | Checkpoint, device: str = "cpu"
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights (strictly)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(Path(checkpoint))
    cfg = config_from_dict(ckpt.config)
    model = build_model(cfg, int(ckpt.meta["num_classes"]))
    missing, unexpected = model.load_state_dict(ckpt.model, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt.path}: weights do not fit the model built from its config "
            f"(missing keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
            f"unexpected keys: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''})"
        )
    model.to(resolve_device(device)).eval()
    return model, cfg, ckpt.meta
