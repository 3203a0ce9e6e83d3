"""The optimiser's parameter groups and the learning-rate schedule of a training run."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from v2idetr.config import Config

_PARTS = ("head", "temporal", "backbone")


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Backbone at ``backbone_lr``, a teacher's temporal module at ``temporal_lr`` (when set), the rest
    at ``lr``; no weight decay on norms, biases and embeddings."""
    lrs = {"backbone": cfg.train.backbone_lr, "head": cfg.train.lr, "temporal": cfg.train.temporal_lr}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone.body") or ".backbone.body" in name:
            part = "backbone"
        elif name.startswith("temporal.") and cfg.train.temporal_lr > 0:
            part = "temporal"
        else:
            part = "head"
        no_decay = param.ndim <= 1 or "embed" in name or "norm" in name
        groups.setdefault((part, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": lrs[part],
            "weight_decay": 0.0 if no_decay else cfg.train.weight_decay,
            "name": f"{part}{'_no_decay' if no_decay else ''}",
        }
        # the order of the groups without temporal_lr is that of older checkpoints' optimiser states
        for (part, no_decay), params in sorted(groups.items(), key=lambda g: (_PARTS.index(g[0][0]), g[0][1]))
    ]


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warm-up, then cosine to 1% / step drops by 10x / constant."""
    t = cfg.train
    if t.warmup_steps > 0 and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "cosine":
        span = max(1, t.steps - t.warmup_steps)
        progress = min(1.0, (step - t.warmup_steps) / span)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
    if t.schedule == "step":
        return 0.1 ** sum(step >= int(m * t.steps) for m in t.step_milestones)
    return 1.0
