"""What the trainer minimises: an *objective* maps a batch to a dict of loss components with a
``loss`` total. The trainer never knows the terms, so plain detection (here) and distillation
(`distill.objective`) train through the same loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from v2idetr.data.collate import Batch

Objective = Callable[[Batch], dict[str, torch.Tensor]]


class DetectionObjective:
    """Set-prediction loss of a detector on a batch: ``criterion(model(images, masks, targets), targets)``."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        self.model, self.criterion = model, criterion

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = self.model(batch.images, batch.masks, batch.targets)
        return self.criterion(outputs, batch.targets)
