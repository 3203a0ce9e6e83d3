"""The training loop: composes a model, an objective (losses), data, optimiser and bookkeeping.

The trainer does not know what the losses are (`engine.objective`). It owns the loop: gradient
clipping, AMP, non-finite steps, periodic validation, when to write checkpoints, stops, and the
JSON-lines metrics log. What a batch holds is `engine.train_loader`'s;
what a checkpoint saves and restores (optimiser, schedule, EMA, position) is `engine.train_state`'s.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from v2idetr.atomic import atomic_write_text
from v2idetr.config import Config, config_to_dict
from v2idetr.data.clips import ClipDataset, ClipSampling
from v2idetr.data.index import DatasetIndex
from v2idetr.data.sampler import ResumableSampler, UnlabelledCoverage
from v2idetr.devices import resolve_device
from v2idetr.engine.checkpoint import prune_step_checkpoints, step_checkpoint_files, step_checkpoint_path
from v2idetr.engine.distributed import (
    DistContext,
    all_true,
    any_true,
    average_gradients,
    barrier,
    broadcast_from_main,
    gather_to_main,
    init_from_env,
    local_device,
    mean_over_processes,
)
from v2idetr.engine.evaluator import evaluate
from v2idetr.engine.inference import build_eval_loader, predict_loader
from v2idetr.engine.objective import Objective
from v2idetr.engine.run_folder import CONFIG_FILE, RunClaim, config_with_run_id, new_run_id, resume_checkpoint
from v2idetr.engine.run_log import LossWindow, MetricsLog, NonFiniteSteps, StopFlag, Throughput
from v2idetr.engine.train_loader import build_train_loader, infinite_batches, training_clips
from v2idetr.engine.train_state import (
    TrainState,
    metrics_summary,
    new_train_state,
    restore_train_state,
    save_train_state,
)
from v2idetr.errors import DatasetError, Terminated
from v2idetr.models.postprocess import PostProcess
from v2idetr.precision import half_dtype

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_value: float | None
    best_step: int | None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``model`` with ``objective`` on ``train_index``; validates on ``val_index``."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        objective: Objective,
        postprocess: PostProcess,
        train_index: DatasetIndex,
        val_index: DatasetIndex | None,
        out_dir: Path,
        meta: dict[str, Any],
        extra_modules: nn.Module | None = None,
        progress: bool = True,
        train_clips: ClipSampling | None = None,
        frame_weights: dict[int, float] | None = None,
        unlabelled_per_batch: int = 0,
        run: RunClaim | None = None,
    ):
        """``train_clips`` overrides the config's clip sampling for the training data only
        (distillation: the teacher's clips for training, the student's key frames for validation);
        ``extra_modules``: training-only modules optimised with the model, saved apart from it;
        ``frame_weights``: sampling weight per training key frame's ``image_id`` (default: uniform);
        ``unlabelled_per_batch``: that many unlabelled key frames join the ``data.batch_size`` labelled
        ones of each batch (distillation; 0: the key frames are the labelled frames only, as for every
        detection loss); ``run``: what `run_folder.claim_run_folder` decided for ``out_dir`` (the run's
        id, whose own checkpoints only are resumed from; the old run to delete first); None: any
        checkpoint is resumed from, and the run gets a new id unless resumed."""
        self.cfg, self.model, self.objective, self.postprocess = cfg, model, objective, postprocess
        self.train_index, self.val_index = train_index, val_index
        self.out_dir = Path(out_dir)
        self.meta = meta
        self.extra_modules = extra_modules
        self.progress = progress
        self.train_clips = train_clips or ClipSampling.of(cfg.data)
        self.frame_weights = frame_weights
        self.unlabelled_per_batch = unlabelled_per_batch
        self.run = run
        self.run_id = run.run_id if run is not None else None
        # Under torchrun each process has its own GPU; known before fit() so that modules the caller
        # moves to trainer.device (the distillation teacher) land on the right one.
        self.device = local_device(resolve_device(cfg.train.device, "config key 'train.device'"))
        self.ctx = DistContext()

    def training_clips(self) -> ClipDataset:
        """Every labelled key frame with its clip; the unlabelled ones too when batches mix them in."""
        return training_clips(self.cfg, self.train_index, self.train_clips, self.unlabelled_per_batch > 0)

    def _loader(self) -> tuple[DataLoader, ResumableSampler]:
        return build_train_loader(
            self.cfg, self.training_clips(), self.train_index.source,
            unlabelled_per_batch=self.unlabelled_per_batch, frame_weights=self.frame_weights,
            rank=self.ctx.rank, world_size=self.ctx.world_size, pin_memory=self.device.type == "cuda",
        )

    def _trainable(self) -> nn.Module:
        if self.extra_modules is None:
            return self.model
        return nn.ModuleDict({"model": self.model, "extra": self.extra_modules})

    def validate(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Validation metrics (the validation split, never the test split, chooses best.ckpt).

        With several processes each predicts its shard of the frames and rank 0 evaluates them all
        (the others get ``{}``)."""
        assert self.val_index is not None
        ctx = self.ctx
        loader = build_eval_loader(self.cfg, self.val_index, shard=(ctx.rank, ctx.world_size))
        preds = predict_loader(
            model, self.postprocess, loader, self.device, progress=self.progress and ctx.is_main, desc="val"
        )
        shards = gather_to_main(preds, ctx)
        if shards is None:
            return {}
        preds = {k: v for shard in shards for k, v in shard.items()}
        out = self.out_dir / "val" / f"step-{step:08d}"
        return evaluate(
            self.val_index,
            preds,
            protocol=self.cfg.eval.protocol,
            score_thresh=self.cfg.eval.score_thresh,
            nms_iou=self.cfg.eval.nms_iou,
            out_dir=out,
        )

    def _save(self, path: Path, state: TrainState, full: bool, weights_from_ema: bool = False) -> None:
        save_train_state(path, state, self.cfg, self.model, self.meta, full=full,
                         extra_modules=self.extra_modules, weights_from_ema=weights_from_ema)

    def _checkpoint(self, state: TrainState, metrics_log: MetricsLog, validate: bool = True) -> None:
        """Validate (if there is a validation split and ``validate``), update best.ckpt, write the step
        and last checkpoints."""
        validate = validate and self.val_index is not None
        if validate:
            state.metrics = self.validate(
                state.ema.module if state.ema is not None else self.model, state.step
            )
        if not self.ctx.is_main:
            barrier(self.ctx)  # rank 0 writes the checkpoints; the others wait for it
            return
        if validate:
            metrics_log.write(
                {"type": "eval", "step": state.step, "epoch": state.epoch, **metrics_summary(state.metrics)}
            )
            value = state.metrics.get(self.cfg.train.best_metric)
            if value is not None and (state.best["value"] is None or value > state.best["value"]):
                state.best = {"metric": self.cfg.train.best_metric, "value": float(value), "step": state.step}
                self._save(self.out_dir / "best.ckpt", state, full=False, weights_from_ema=True)
                log.info("step %d: new best %s = %.4f", state.step, self.cfg.train.best_metric, value)
        if self.val_index is None or not (self.out_dir / "best.ckpt").exists():
            self._save(self.out_dir / "best.ckpt", state, full=False, weights_from_ema=True)
        self._save(step_checkpoint_path(self.out_dir, state.step), state, full=True)
        prune_step_checkpoints(self.out_dir, self.cfg.train.keep_last, self.cfg.train.save_steps, self.run_id)
        self._save(self.out_dir / "last.ckpt", state, full=True)
        barrier(self.ctx)

    def _save_before_failing(self, state: TrainState, metrics_log: MetricsLog) -> None:
        """A frame that cannot be read stops the run: keep the steps done since the last checkpoint
        (one process only: a collective save would wait for the others)."""
        if state.step == 0 or self.ctx.world_size > 1:
            return
        self._checkpoint(state, metrics_log, validate=False)
        log.error("a training frame could not be read at step %d; saved %s: fix or remove the frame (or set "
                  "data.skip_invalid=true) and go on with --resume", state.step, self.out_dir / "last.ckpt")

    def _resume(self, state: TrainState) -> int | None:
        """Restore everything from the run's newest usable checkpoint; the step resumed from, or None
        when the folder holds no checkpoint (``CheckpointError`` when it holds only unusable ones)."""
        if not (self.out_dir / "last.ckpt").exists() and not step_checkpoint_files(self.out_dir):
            log.info("--resume: no checkpoint in %s, starting from scratch", self.out_dir)
            return None
        ckpt = resume_checkpoint(self.out_dir, self.run_id)
        self.run_id = self.run_id or ckpt.meta.get("run_id")
        restore_train_state(ckpt, state, self.model, self.extra_modules)
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            ckpt.path,
            state.step,
            state.epoch,
            state.position,
        )
        return state.step

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``train.steps`` (or a stop); with ``torchrun``, as one of several processes
        (``engine.distributed``): only rank 0 logs and writes."""
        cfg = self.cfg
        self.ctx = ctx = init_from_env(self.device.type)
        main = ctx.is_main
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.run is not None:
            self.run.start(self.out_dir)
        seed_everything(cfg.train.seed + ctx.rank)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.model.to(self.device)
        if self.extra_modules is not None:
            self.extra_modules.to(self.device)
        trainable = self._trainable()
        state = new_train_state(cfg, self.model, trainable)
        optimizer = state.optimizer
        resume_step = self._resume(state) if resume else None
        self.run_id = self.run_id or new_run_id()
        self.meta = {**self.meta, "run_id": self.run_id}
        broadcast_from_main(trainable, ctx)
        metrics_log = MetricsLog(self.out_dir / "metrics.jsonl", resume_step) if main else MetricsLog.disabled()
        if resume_step is None and main:
            atomic_write_text(self.out_dir / CONFIG_FILE,
                              json.dumps(config_with_run_id(config_to_dict(cfg), self.run_id), indent=2))

        loader, sampler = self._loader()
        coverage = UnlabelledCoverage(loader.dataset.key_frames) if self.unlabelled_per_batch else None
        batches = infinite_batches(loader, sampler, state.epoch, state.position)
        self.model.train()
        amp_dtype = half_dtype(cfg.train.amp)
        use_amp = amp_dtype is not None and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        params = [p for p in trainable.parameters() if p.requires_grad]
        bad_steps = NonFiniteSteps(cfg.train.max_bad_steps, self.out_dir / "last.ckpt")
        skipped_frames: set[int] = set()
        started = time.monotonic()
        window = LossWindow()
        throughput = Throughput(self.device, ctx.world_size)
        epoch_sum, epoch_n, epoch_seen = 0.0, 0, state.epoch
        stop_reason: str | None = None
        bar = tqdm(
            total=cfg.train.steps,
            initial=state.step,
            desc="train",
            disable=not (self.progress and main),
            dynamic_ncols=True,
        )
        with StopFlag() as stop:
            while state.step < cfg.train.steps:
                try:
                    state.epoch, state.position, batch = next(batches)
                except DatasetError:
                    self._save_before_failing(state, metrics_log)
                    raise
                if state.epoch != epoch_seen:
                    if epoch_n:
                        epoch_loss = mean_over_processes({"loss": epoch_sum / epoch_n}, ctx)
                        metrics_log.write(
                            {"type": "epoch", "epoch": epoch_seen, "step": state.step, **epoch_loss}
                        )
                    epoch_sum, epoch_n, epoch_seen = 0.0, 0, state.epoch
                if coverage is not None:
                    coverage.update(batch.targets)
                if batch.skipped:  # counted here: each loader worker only sees its own skips
                    skipped_frames.update(batch.skipped)
                    log.warning("%d unreadable training key frame(s) skipped so far (data.skip_invalid)",
                                len(skipped_frames))
                batch = batch.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                    losses = self.objective(batch)
                loss = losses["loss"]
                optimizer.zero_grad(set_to_none=True)
                grad_norm = None
                if all_true(bool(torch.isfinite(loss)), ctx, self.device):
                    scaler.scale(loss).backward()
                    average_gradients(params, ctx)
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad or float("inf"))
                if grad_norm is None or not torch.isfinite(grad_norm):
                    optimizer.zero_grad(set_to_none=True)
                    if grad_norm is not None:
                        scaler.update()
                    bad_steps.skip("loss" if grad_norm is None else "gradient", state.step)
                    continue
                scaler.step(optimizer)
                scaler.update()
                state.scheduler.step()
                if state.ema is not None:
                    state.ema.update_parameters(self.model)
                bad_steps.ok()
                state.step += 1
                loss_value = loss.item()  # one host sync for the epoch mean and the progress bar
                epoch_sum, epoch_n = epoch_sum + loss_value, epoch_n + 1
                window.add(losses)
                throughput.add(int(batch.images.shape[0]))
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", ep=state.epoch,
                                **({"unlabelled": coverage.describe()} if coverage is not None else {}))
                if state.step % cfg.train.log_every == 0 or state.step == cfg.train.steps:
                    means = mean_over_processes(window.take(), ctx)
                    metrics_log.write(
                        {
                            "type": "train",
                            "step": state.step,
                            "epoch": state.epoch,
                            "lr": optimizer.param_groups[-1]["lr"],
                            **means,
                            "grad_norm": float(grad_norm),
                            "skipped_steps": bad_steps.total,
                            **({"skipped_frames": len(skipped_frames)} if cfg.data.skip_invalid else {}),
                            "elapsed_s": time.monotonic() - started,
                            **throughput.take(),
                            **({"unlabelled_seen": len(coverage.seen)} if coverage is not None else {}),
                        }
                    )
                if (
                    cfg.train.time_limit_min > 0
                    and time.monotonic() - started > 60 * cfg.train.time_limit_min
                ):
                    stop_reason = f"time limit of {cfg.train.time_limit_min} min"
                stop_reason = stop.requested or stop_reason
                if any_true(stop_reason is not None, ctx, self.device) and stop_reason is None:
                    stop_reason = "stop requested by another process"
                periodic = cfg.train.eval_every > 0 and state.step % cfg.train.eval_every == 0
                evaluated = periodic or state.step == cfg.train.steps
                if evaluated or stop_reason or state.step in cfg.train.save_steps:
                    # An early stop (preemption signal, Ctrl-C, time limit) may have only seconds
                    # left: write the checkpoint at once and leave validation to the resumed run.
                    # stop_reason agrees on every process, so they all skip the (collective) validation.
                    # A save step is only kept for a later run: validating there would change which
                    # checkpoint is best.
                    self._checkpoint(state, metrics_log, validate=evaluated)
                if stop_reason:
                    log.warning("stopping at step %d (%s); resume with --resume", state.step, stop_reason)
                    break
        bar.close()
        if state.step == 0:
            self._checkpoint(state, metrics_log)
        if stop.requested:
            raise Terminated if stop.requested == "SIGTERM" else KeyboardInterrupt
        return TrainResult(
            self.out_dir,
            state.step,
            state.best["value"],
            state.best["step"],
            state.metrics or {},
            stopped_early=stop_reason is not None,
        )
