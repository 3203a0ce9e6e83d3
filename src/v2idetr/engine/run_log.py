"""What a training run writes as it goes and how it stops: ``metrics.jsonl`` and the stop flag that
SIGINT/SIGTERM raise (the loop saves a checkpoint at the next step boundary)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import numpy as np

from v2idetr.atomic import atomic_write_text

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
