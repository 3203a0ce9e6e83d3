"""Data-parallel training across processes (``torchrun``), and the helpers the trainer needs for it.

``torchrun --nproc_per_node N -m v2idetr train ...`` starts N copies; each reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, joins the process group (NCCL on CUDA,
gloo on CPU), trains on its shard of every global batch and averages gradients with the others
after each backward pass. ``data.batch_size`` is per process: the global batch is
``batch_size x world_size``.

Why gradients are averaged here instead of by ``DistributedDataParallel``'s wrapper: the trainer is
objective-agnostic and the distillation objective calls parts of the student (feature extraction,
encoder, the decoder on the teacher's queries) rather than its ``forward``, which DDP's wrapper
needs to see to synchronise. One flattened all-reduce per step after ``backward`` gives the same
update for any objective. Decisions every rank must take together (skip a non-finite step, stop on
a signal or the time limit) are all-reduced too, so no rank waits forever on the others.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_device(device: torch.device) -> torch.device:
    """Under ``torchrun`` on CUDA, this process's GPU (``LOCAL_RANK``); ``device`` otherwise."""
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device_type: str) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment (once); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        log.info("process %d of %d joined the %s process group", rank, world, backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def broadcast_from_main(module: nn.Module, ctx: DistContext) -> None:
    """Give every process rank 0's parameters and buffers (different random initialisations otherwise)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Replace every gradient by its mean over the processes (a missing gradient counts as zeros)."""
    if not ctx.enabled or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """``flag`` on every process (e.g. "my loss is finite")."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def any_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """``flag`` on at least one process (e.g. "stop requested")."""
    return not all_true(not flag, ctx, device)


def mean_over_processes(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Per-key mean over the processes that logged the key (a process whose batch had no lesion has
    no denoising terms, for instance), for the metrics log."""
    if not ctx.enabled:
        return values
    everyone: list[dict[str, float]] = [{} for _ in range(ctx.world_size)]
    dist.all_gather_object(everyone, values)
    keys = sorted({k for v in everyone for k in v})
    return {k: sum(v[k] for v in everyone if k in v) / sum(k in v for v in everyone) for k in keys}


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every process's ``obj`` on rank 0 (in rank order), ``None`` elsewhere."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
