"""Fold the backbone's batch norms into the convolutions before them, for inference.

At inference a batch norm (frozen, or in eval mode) is a per-channel affine map, so the convolution
before it can absorb it: ``w' = w * s``, ``b' = b * s + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean * s``. The outputs stay the same up to float rounding and the model runs one
memory-bound pass per block fewer (measured: the EfficientNet-Lite0 student at 256 px on a CPU
7-25% faster in eager PyTorch, depending on load; ONNX Runtime does the same fusion on its own). Like Ultralytics' ``fuse()``,
only for deployment: a folded model has no batch norm left to train.

A pair is a ``Conv2d`` child immediately followed by a batch-norm child of the same parent, in the
order the parent registers them (torchvision ResNets, timm's EfficientNets); timm's norm+activation
layers keep their activation. Because registration order need not be execution order in every
network, `fold_backbone_norms` checks each folded trunk on a probe input and keeps the original when
the outputs differ.
"""

from __future__ import annotations

import copy
import itertools
import logging

import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from v2idetr.models.backbone import Backbone

log = logging.getLogger(__name__)

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d, FrozenBatchNormAct2d)
# largest |folded - original| over the probe, relative to the largest |original| value
_TOLERANCE = 1e-4


def _affine(norm: nn.Module) -> tuple[Tensor, Tensor] | None:
    """``(scale, shift)`` of a batch norm at inference, or None when it has no running statistics."""
    mean, var = getattr(norm, "running_mean", None), getattr(norm, "running_var", None)
    if mean is None or var is None:
        return None
    weight = norm.weight if norm.weight is not None else torch.ones_like(var)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(mean)
    scale = weight / torch.sqrt(var + norm.eps)
    return scale, bias - mean * scale


def _after_norm(norm: nn.Module) -> nn.Module:
    """What is left of a norm layer once its affine map is in the convolution: timm's activation."""
    if isinstance(norm, (BatchNormAct2d, FrozenBatchNormAct2d)):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> int:
    """Fold, in place, every batch norm that directly follows a ``Conv2d`` among the children of
    ``module`` or of any submodule; the number folded. ``module`` must be used for inference only."""
    folded = 0
    children = list(module.named_children())
    for (_, conv), (norm_name, norm) in itertools.pairwise(children):
        if not (isinstance(conv, nn.Conv2d) and isinstance(norm, _NORMS)):
            continue
        affine = _affine(norm)
        if affine is None or affine[0].numel() != conv.out_channels:
            continue
        scale, shift = affine
        conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        setattr(module, norm_name, _after_norm(norm))
        folded += 1
    for _, child in module.named_children():
        folded += fold_batch_norms(child)
    return folded


def _max_relative_difference(before: list[Tensor], after: list[Tensor]) -> float:
    scale = max(float(b.abs().max()) for b in before) or 1.0
    return max(float((b - a).abs().max()) for b, a in zip(before, after, strict=True)) / scale


@torch.no_grad()
def fold_backbone_norms(model: nn.Module, probe_size: int = 64) -> nn.Module:
    """``model`` (put in eval mode) with the batch norms of every ``Backbone`` trunk in it folded, in
    place (the trunks' original modules are left as they were and replaced by folded copies).

    Each trunk is folded on a copy, run against the original on a random probe image, and swapped in
    only if the outputs agree; otherwise the original stays and a warning says so."""
    model.eval()
    for backbone in (m for m in model.modules() if isinstance(m, Backbone)):
        param = next(backbone.body.parameters(), None)
        if param is None:
            continue
        # a generator of its own: loading a model for inference must not move the global RNG
        probe = torch.rand(1, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
        probe = probe.to(device=param.device, dtype=param.dtype)
        original = backbone.body
        before = backbone.trunk(probe)
        backbone.body = copy.deepcopy(original)
        count = fold_batch_norms(backbone.body)
        difference = _max_relative_difference(before, backbone.trunk(probe)) if count else 0.0
        if difference > _TOLERANCE:
            backbone.body = original
            log.warning("folding the backbone's batch norms changed its outputs (relative %.1e): kept them unfolded",
                        difference)
    return model
