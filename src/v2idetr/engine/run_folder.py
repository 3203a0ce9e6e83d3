"""A run folder belongs to one run: hours of training live there and must never be mixed or lost.

Each run gets an id, written into ``config.json`` (``run_id``) and every checkpoint's metadata.
``train`` and ``distill`` refuse an ``--out`` that already holds a run unless ``--resume`` (the same
run goes on: same model config, else the differing keys are listed) or ``--overwrite`` (the old
run's checkpoints, ``val/`` and logs are deleted first). Resuming takes the run's own newest usable
checkpoint, ``last.ckpt`` first; unusable or foreign files are skipped with a warning, and when
there are checkpoints but none is usable the run stops with their names instead of starting over
(which would also cut ``metrics.jsonl``). Temporary files left by a killed writer (``atomic.py``)
are removed when a run starts in the folder.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from v2idetr.atomic import remove_stale_temps
from v2idetr.engine.checkpoint import Checkpoint, find_resume_checkpoint, step_checkpoint_files
from v2idetr.errors import CheckpointError, ConfigError
from v2idetr.outputs import output_folder

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# what a run writes into its folder: --overwrite deletes these (and the step checkpoints), nothing else
RUN_OUTPUTS = (CONFIG_FILE, "last.ckpt", "best.ckpt", "metrics.jsonl", "frame-weights.json", "val")


@dataclass
class RunClaim:
    """What `claim_run_folder` decided: the run's id, whether it goes on from a checkpoint, and
    whether the old run must be deleted first (``--overwrite``; done by `start`, when training
    begins, so that a mistake found while loading the data or the teacher leaves the old run intact)."""

    run_id: str
    resuming: bool
    clear_old: bool = False

    def start(self, out_dir: Path) -> None:
        """Delete the old run if the claim says so (one process of a ``torchrun`` job), once."""
        files = run_files(out_dir) if self.clear_old and Path(out_dir).is_dir() else []
        if files and _is_main_process():
            log.warning("--overwrite: deleting %s in %s", _describe(Path(out_dir), files), out_dir)
            clear_run(out_dir)
        self.clear_old = False


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _is_main_process() -> bool:
    """Only one process of a ``torchrun`` job deletes files (every process checks the folder)."""
    return os.environ.get("RANK", "0") == "0"


def run_files(out_dir: Path) -> list[Path]:
    """The files and folders of a run in ``out_dir`` (empty: the folder holds no run)."""
    out_dir = Path(out_dir)
    found = [out_dir / name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    return found + step_checkpoint_files(out_dir)


def saved_config(out_dir: Path) -> dict[str, Any] | None:
    """``config.json`` of the run in ``out_dir`` (None when missing or unreadable)."""
    try:
        return json.loads((Path(out_dir) / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def config_with_run_id(config: dict[str, Any], run_id: str) -> dict[str, Any]:
    """What ``config.json`` holds: the run id first, then the config."""
    return {"run_id": run_id, **config}


def _describe(out_dir: Path, files: list[Path]) -> str:
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in files[:6]) + (" ..." if len(files) > 6 else "")
    saved = saved_config(out_dir) or {}
    steps = saved.get("train", {}).get("steps")
    run = f"run {saved['run_id']}" if saved.get("run_id") else "a run"
    return f"{run}{f' of {steps} steps' if steps else ''} ({names})"


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def model_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The ``model.*`` keys whose values differ between two configs, as ``key: a there, b now``."""
    a, b = _flat(before.get("model", {}), "model."), _flat(now.get("model", {}), "model.")
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} now" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


def clear_run(out_dir: Path) -> None:
    """Delete a run's outputs (``RUN_OUTPUTS`` and the step checkpoints), nothing else in the folder."""
    for path in run_files(out_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def claim_run_folder(out_dir: str | Path, config: dict[str, Any], resume: bool = False,
                     overwrite: bool = False) -> RunClaim:
    """Check ``out_dir`` before a run starts (module docstring); ``config`` is the new run's (as a dict).

    Nothing is deleted here (`RunClaim.start` does it). Raises ``ConfigError`` for a folder that holds another run (without ``resume`` or ``overwrite``)
    or a model config that differs from the resumed run's, and ``CheckpointError`` when the folder
    holds checkpoints of which none can be resumed from.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: give one (--resume continues the run in --out, --overwrite "
                          "deletes it and starts a new one)")
    output_folder(out_dir)
    if out_dir.is_dir() and _is_main_process():
        remove_stale_temps(out_dir)
    files = run_files(out_dir) if out_dir.is_dir() else []
    if overwrite:
        return RunClaim(new_run_id(), resuming=False, clear_old=bool(files))
    if not files:
        if resume:
            log.info("--resume: %s holds no run yet; starting one", out_dir)
        return RunClaim(new_run_id(), resuming=False)
    if not resume:
        raise ConfigError(f"--out {out_dir} holds {_describe(out_dir, files)}: give --resume to continue it, "
                          "--overwrite to delete it and start again, or another --out")
    saved = saved_config(out_dir)
    ckpt = resume_checkpoint(out_dir, (saved or {}).get("run_id"))
    before = saved if saved is not None else ckpt.meta.get("config", {})
    changed = model_differences(before, config)
    if changed:
        raise ConfigError(f"--resume: the run in {out_dir} has another model config ({'; '.join(changed)}); its "
                          "weights do not fit this one: give the same model keys, or --overwrite / another --out "
                          "for a new run")
    return RunClaim(ckpt.meta.get("run_id") or (saved or {}).get("run_id") or new_run_id(), resuming=True)


def resume_checkpoint(out_dir: Path, run_id: str | None) -> Checkpoint:
    """The checkpoint a resumed run goes on from (`find_resume_checkpoint` for ``run_id``), or
    ``CheckpointError`` naming every checkpoint file when none of them is usable."""
    ckpt = find_resume_checkpoint(out_dir, run_id)
    if ckpt is None:
        names = [p.name for p in [Path(out_dir) / "last.ckpt", *step_checkpoint_files(out_dir)] if p.exists()]
        raise CheckpointError(
            f"--resume: no usable checkpoint of this run in {out_dir} ({', '.join(names) or 'none'}: truncated, "
            "corrupt, another run's or not a training checkpoint; see the warnings above); nothing was changed. "
            "--overwrite starts a new run there")
    return ckpt
