"""`v2idetr bench speed --train`: what one training step of each stage costs, before a run starts.

A user sizing a run (batch, frame size, ``train.amp``, ``train.activation_checkpointing``) needs
steps/s and peak memory of the three stages, image baseline, video teacher and distillation
(student + frozen teacher), on their own device. Each stage runs the trainer's objective, backward
pass, gradient clipping and AdamW step on synthetic batches of the requested size (a few boxes per
frame), so no dataset is needed; the cost of a step does not depend on the pixels.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from v2idetr.config import Config
from v2idetr.data.collate import Batch
from v2idetr.distill.objective import DistillationObjective
from v2idetr.engine.objective import DetectionObjective
from v2idetr.engine.optim import param_groups
from v2idetr.models.backbone import Backbone
from v2idetr.models.build import build
from v2idetr.precision import half_dtype

STAGES = ("baseline", "teacher", "distill")


def synthetic_batch(batch: int, frames: int, size: int, num_classes: int, seed: int = 0) -> Batch:
    """``batch`` clips of ``frames`` random ``size x size`` frames, three random boxes on each key frame."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(batch):
        centres = 0.2 + 0.6 * torch.rand(3, 2, generator=gen)
        sizes = 0.05 + 0.15 * torch.rand(3, 2, generator=gen)
        targets.append({
            "boxes": torch.cat([centres, sizes], 1),
            "labels": torch.randint(0, num_classes, (3,), generator=gen),
            "image_id": torch.tensor(i),
            "orig_size": torch.tensor([size, size]),
            "size": torch.tensor([size, size]),
            "labelled": torch.tensor(True),
        })
    return Batch(
        images=torch.rand(batch, frames, 3, size, size, generator=gen),
        masks=torch.zeros(batch, size, size, dtype=torch.bool),
        targets=targets,
        frame_targets=None,
        frame_offsets=torch.arange(frames).repeat(batch, 1),
    )


def _random_weights(cfg: Config, num_classes: int):
    """``build(cfg)`` with random weights (the cost is the same, and nothing is downloaded), training
    what the configured weights would: a pretrained trunk keeps its stem frozen."""
    pretrained = cfg.model.backbone_weights != "none"
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone_weights = "none"
    built = build(cfg, num_classes)
    for module in built.model.modules():
        if isinstance(module, Backbone):
            module.freeze_trunk(cfg.model, pretrained)
    return built, cfg


def _objective(stage: str, student_cfg: Config, teacher_cfg: Config, num_classes: int, dev: torch.device):
    """``(objective, trainable model, config of the stage)``."""
    built, cfg = _random_weights(teacher_cfg if stage == "teacher" else student_cfg, num_classes)
    model = built.model.to(dev).train()
    if stage != "distill":
        return DetectionObjective(model, built.criterion.to(dev)), model, cfg
    teacher = _random_weights(teacher_cfg, num_classes)[0].model.to(dev)
    start = copy.deepcopy(model).eval() if cfg.distill.tfd_target == "residual" else None
    objective = DistillationObjective(model, teacher, built.criterion.to(dev), cfg.distill, start=start)
    objective.extra_modules.to(dev)
    return objective, torch.nn.ModuleList([model, objective.extra_modules]), cfg


def benchmark_train_step(
    student_cfg: Config,
    teacher_cfg: Config,
    size: int,
    batch: int,
    device: torch.device,
    steps: int = 5,
    warmup: int = 2,
    num_classes: int = 2,
) -> list[dict[str, Any]]:
    """One row per stage: ``steps_per_s``, ``frames_per_s`` (key frames), ``peak_memory_mb`` (CUDA)."""
    rows = []
    for stage in STAGES:
        row: dict[str, Any] = {"stage": stage, "batch": batch, "size": size, "error": None}
        try:
            objective, trainable, cfg = _objective(stage, student_cfg, teacher_cfg, num_classes, device)
            frames = teacher_cfg.data.num_frames if stage != "baseline" else 1
            data = synthetic_batch(batch, frames, size, num_classes).to(device)
            optimizer = torch.optim.AdamW(param_groups(trainable, cfg), lr=cfg.train.lr)
            amp = half_dtype(cfg.train.amp)
            use_amp = amp is not None and device.type == "cuda"
            scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp == torch.float16)  # as the trainer
            params = [p for p in trainable.parameters() if p.requires_grad]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for i in range(warmup + steps):
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=use_amp):
                    loss = objective(data)["loss"]
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad or float("inf"))
                scaler.step(optimizer)
                scaler.update()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            mean = float(np.mean(times))
            row.update(frames_in=frames, steps_per_s=round(1.0 / mean, 3), frames_per_s=round(batch / mean, 2),
                       ms_per_step=round(1000 * mean, 1),
                       activation_checkpointing=cfg.train.activation_checkpointing, amp=cfg.train.amp)
            if device.type == "cuda":
                row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        except torch.OutOfMemoryError as exc:  # a batch that does not fit is an answer, not a crash
            row["error"] = f"out of memory: {str(exc).splitlines()[0][:160]}"
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def format_train_table(rows: list[dict[str, Any]], device: str) -> str:
    lines = [f"Training step on {device} (synthetic batches; objective, backward, clip, AdamW)",
             f"{'stage':<9} {'batch':>5} {'size':>5} {'steps/s':>8} {'frames/s':>9} {'ms/step':>9} {'peak MB':>8}"]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['stage']:<9} {r['batch']:>5} {r['size']:>5} failed: {r['error']}")
            continue
        peak = r.get("peak_memory_mb")
        lines.append(f"{r['stage']:<9} {r['batch']:>5} {r['size']:>5} {r['steps_per_s']:>8.2f} {r['frames_per_s']:>9.1f} "
                     f"{r['ms_per_step']:>9.1f} {'-' if peak is None else format(peak, '8.0f'):>8}")
    return "\n".join(lines)
