"""What a training run writes as it goes and how it stops: ``metrics.jsonl``, the stop flag that
SIGINT/SIGTERM raise (the loop saves a checkpoint at the next step boundary) and the count of
non-finite steps that ends a diverging run."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from v2idetr.atomic import atomic_write_text
from v2idetr.errors import TrainingError

log = logging.getLogger(__name__)


class StopFlag:
    """SIGINT/SIGTERM ask the loop to save a checkpoint and stop at the next step boundary."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint and stopping after this step", self.requested)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once so a crash loses nothing."""

    def __init__(self, path: Path | None, resume_step: int | None):
        self.path = path
        if path is None:
            return
        if resume_step is not None and path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        elif path.exists():
            path.unlink()

    @classmethod
    def disabled(cls) -> MetricsLog:
        """A log that writes nothing (processes other than rank 0)."""
        return cls(None, None)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")
            fh.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class LossWindow:
    """The mean of each loss term over the steps since the last ``take``: what each ``train`` line of
    ``metrics.jsonl`` reports. Per-layer auxiliary terms (names ending in a digit) stay out of it."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            if not name[-1].isdigit():
                self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.steps += 1

    def take(self) -> dict[str, float]:
        """The means since the last call, then a new window."""
        means = {name: total / max(self.steps, 1) for name, total in self.sums.items()}
        self.sums, self.steps = {}, 0
        return means


class Throughput:
    """Training frames per second over each logging window, and the device's peak memory so far.

    Logged with every ``train`` line of ``metrics.jsonl`` so a user can size a run (batch, frame
    size, ``train.activation_checkpointing``) from its first minute.
    """

    def __init__(self, device: torch.device, world_size: int):
        self.device, self.world_size = device, world_size
        self.frames = 0
        self.since = time.monotonic()

    def add(self, frames: int) -> None:
        self.frames += frames

    def take(self) -> dict[str, float]:
        """Numbers since the last call (frames over every process), then a new window."""
        now = time.monotonic()
        out = {"frames_per_s": self.frames * self.world_size / max(now - self.since, 1e-9)}
        if self.device.type == "cuda":
            out["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.frames, self.since = 0, now
        return out


class NonFiniteSteps:
    """Steps skipped for a non-finite loss or gradient. A few are survivable (one bad batch under
    AMP); ``limit`` in a row mean the run diverged, and going on would only burn time."""

    def __init__(self, limit: int, last_checkpoint: Path):
        self.limit, self.last_checkpoint = limit, last_checkpoint
        self.in_a_row, self.total = 0, 0

    def ok(self) -> None:
        """A step went through: the next bad one starts a new run of them."""
        self.in_a_row = 0

    def skip(self, what: str, step: int) -> None:
        """Count a skipped step (``what``: "loss" or "gradient"); ``TrainingError`` at the limit."""
        self.in_a_row, self.total = self.in_a_row + 1, self.total + 1
        log.warning("step %d: non-finite %s, step skipped (%d in a row, %d in all)", step, what, self.in_a_row,
                    self.total)
        if self.in_a_row >= self.limit:
            raise TrainingError(
                f"{self.in_a_row} non-finite {what} values in a row at step {step}; last good checkpoint: "
                f"{self.last_checkpoint}. Lower train.lr or check the data."
            )
