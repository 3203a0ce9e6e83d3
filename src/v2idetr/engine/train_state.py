"""What a training checkpoint holds and restores: optimiser, schedule, EMA, position in the data, best.

One place for the state of a run, so that saving and resuming cannot drift apart: everything
`save_train_state` writes in a full checkpoint, `restore_train_state` reads back, and a resumed run
continues exactly where the saved one stopped (same batches, same random numbers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from v2idetr import __version__
from v2idetr.config import Config, config_to_dict
from v2idetr.engine.checkpoint import Checkpoint, restore_rng, save_checkpoint
from v2idetr.engine.optim import lr_factor, param_groups


@dataclass
class TrainState:
    """Everything a checkpoint must restore for an exact resume, in one place."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    best: dict[str, Any]
    step: int = 0
    epoch: int = 0
    position: int = 0
    metrics: dict[str, Any] | None = None


def new_train_state(cfg: Config, model: nn.Module, trainable: nn.Module) -> TrainState:
    """AdamW over ``trainable``'s parameter groups, the warm-up + decay schedule, and an EMA of
    ``model`` (when ``train.ema`` > 0), at step 0 with no best yet."""
    optimizer = torch.optim.AdamW(param_groups(trainable, cfg), lr=cfg.train.lr)
    return TrainState(
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg)),
        ema=AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema), use_buffers=True)
        if cfg.train.ema > 0
        else None,
        best={"metric": cfg.train.best_metric, "value": None, "step": None},
    )


def metrics_summary(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The scalar top-level metrics (splits stay in the per-evaluation metrics.json)."""
    if not metrics:
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}


def save_train_state(
    path: Path,
    state: TrainState,
    cfg: Config,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    full: bool,
    extra_modules: nn.Module | None = None,
    weights_from_ema: bool = False,
) -> None:
    """``full``: a resumable training checkpoint (optimiser, scheduler, EMA, RNG, extra modules);
    otherwise the deployable weights (the EMA's when ``weights_from_ema``) and metadata only."""
    meta = {
        **meta,
        "config": config_to_dict(cfg),
        "step": state.step,
        "epoch": state.epoch,
        "position": state.position,
        "best": state.best,
        "metrics": metrics_summary(state.metrics),
        "v2idetr_version": __version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    ema = state.ema
    model_state = (ema.module if (weights_from_ema and ema is not None) else model).state_dict()
    if full:
        meta["scheduler"] = state.scheduler.state_dict()
    save_checkpoint(
        path,
        model_state,
        meta,
        ema_state=ema.module.state_dict() if (ema is not None and full) else None,
        optimizer_state=state.optimizer.state_dict() if full else None,
        with_rng=full,
        extra_state=extra_modules.state_dict() if (full and extra_modules is not None) else None,
    )


def restore_train_state(
    ckpt: Checkpoint, state: TrainState, model: nn.Module, extra_modules: nn.Module | None = None
) -> None:
    """Load a full checkpoint written by `save_train_state` into ``model``, ``extra_modules`` and
    ``state``, and restore the random number generators."""
    model.load_state_dict(ckpt.model)
    if extra_modules is not None:
        extra_modules.load_state_dict(ckpt.extra)
    state.optimizer.load_state_dict(ckpt.optimizer)
    if ckpt.meta.get("scheduler"):
        state.scheduler.load_state_dict(ckpt.meta["scheduler"])
    if state.ema is not None and ckpt.ema is not None:
        state.ema.module.load_state_dict(ckpt.ema)
    restore_rng(ckpt.rng_torch, ckpt.meta.get("rng"))
    state.step, state.epoch, state.position = ckpt.meta["step"], ckpt.meta["epoch"], ckpt.meta["position"]
    state.best = ckpt.meta.get("best", state.best)
    state.metrics = ckpt.meta.get("metrics", {})
