"""Checkpoints: one safetensors file holding weights, optimiser state and JSON metadata.

Why safetensors for everything: loading a checkpoint never unpickles code (checkpoints get shared
between sites handling patient data), and a truncated file fails its header/size check instead of
loading garbage. Files are written atomically (temp file + fsync + rename), so a crash mid-write
leaves the previous checkpoint intact.

Tensor names: ``model.<param>``, ``ema.<param>``, ``optim.<param-index>.<state-key>``,
``rng.torch``. Metadata key ``v2idetr``: JSON with the config, class names, the training state
(step, epoch, best metric), optimiser hyper-parameters, scheduler state and RNG states.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from v2idetr.atomic import atomic_write
from v2idetr.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^ckpt-(\d+)\.ckpt$")


@dataclass
class Checkpoint:
    """What a checkpoint holds once loaded; optional parts are None when not saved."""

    model: dict[str, torch.Tensor]
    meta: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    rng_torch: torch.Tensor | None = None
    path: Path | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "detector")


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng() -> tuple[torch.Tensor, dict[str, Any]]:
    """RNG states of torch (as a tensor), numpy and Python (as JSON) for exact resume."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return torch.get_rng_state(), {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(torch_state: torch.Tensor | None, states: dict[str, Any] | None) -> None:
    if torch_state is not None:
        torch.set_rng_state(torch_state)
    if states:
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    path: Path,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    with_rng: bool = False,
    extra_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically. ``meta`` must be JSON-serialisable (config, classes, state).

    ``extra_state``: training-only modules (e.g. distillation adapters), kept apart from the model
    weights as ``extra.<name>`` so that ``model.*`` is always exactly the deployable network.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    if extra_state:
        tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra_state.items()})
    meta = {**meta, "format_version": FORMAT_VERSION}
    if ema_state is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()})
    if optimizer_state is not None:
        optim_tensors, optim_meta = _flatten_optimizer(optimizer_state)
        tensors.update(optim_tensors)
        meta["optimizer"] = optim_meta
    if with_rng:
        rng_tensor, rng_meta = capture_rng()
        tensors["rng.torch"] = rng_tensor
        meta["rng"] = rng_meta
    tensors = _dedupe_shared(tensors)
    metadata = {"v2idetr": json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing storage (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if ptr in seen and ptr != -1:
            tensor = tensor.clone()
        seen.add(ptr)
        out[name] = tensor
    return out


def read_meta(path: Path) -> dict[str, Any]:
    """Only the metadata (cheap: reads the header, not the tensors)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("v2idetr")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable v2idetr checkpoint ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without v2idetr metadata (not a v2idetr checkpoint)")
    return json.loads(raw)


def load_checkpoint(path: Path, map_location: str = "cpu") -> Checkpoint:
    """Load and split a checkpoint; a truncated or foreign file raises ``CheckpointError``."""
    path = Path(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format_version')!r}, this version reads {FORMAT_VERSION}"
        )
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}, "extra": {}}
    for name, tensor in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in groups:
            raise CheckpointError(f"{path}: unexpected tensor {name!r} (not a v2idetr checkpoint layout)")
        groups[prefix][name if prefix == "optim" else rest] = tensor
    optimizer = None
    if "optimizer" in meta:
        optimizer = _unflatten_optimizer(groups["optim"], meta["optimizer"])
    return Checkpoint(
        model=groups["model"],
        meta=meta,
        ema=groups["ema"] or None,
        optimizer=optimizer,
        rng_torch=groups["rng"].get("torch"),
        path=path,
        extra=groups["extra"],
    )


def step_checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"ckpt-{step:08d}.ckpt"


def step_checkpoint_files(out_dir: Path) -> list[Path]:
    """The ``ckpt-<step>.ckpt`` files in ``out_dir``, newest step first."""
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("ckpt-*.ckpt") if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def is_complete(path: Path) -> bool:
    """Whether a safetensors file holds every byte its header promises (cheap: the header only), so
    that a truncated file is told apart without loading it."""
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        return Path(path).stat().st_size == 8 + header_len + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def _run_of(path: Path) -> str | None:
    """The run id in a checkpoint's metadata (None for a checkpoint written before run ids)."""
    return read_meta(path).get("run_id")


def prune_step_checkpoints(out_dir: Path, keep: int, protected: Sequence[int] = (), run_id: str | None = None) -> None:
    """Keep the ``keep`` newest ``ckpt-*.ckpt`` files (``last.ckpt`` and ``best.ckpt`` are separate) and
    those of the ``protected`` steps, which do not count towards ``keep``. With ``run_id`` only the
    complete checkpoints of that run count and are pruned: a truncated file or another run's never
    pushes out a usable checkpoint of this run."""
    found = []
    for path in step_checkpoint_files(out_dir):
        step = int(_STEP_FILE.match(path.name).group(1))  # type: ignore[union-attr]
        if step in protected:
            continue
        if run_id is not None:
            try:
                if not is_complete(path) or _run_of(path) != run_id:
                    continue
            except CheckpointError:
                continue
        found.append(path)
    for old in found[max(keep, 1):]:
        old.unlink(missing_ok=True)


def find_resume_checkpoint(out_dir: Path, run_id: str | None = None) -> Checkpoint | None:
    """The newest usable training checkpoint in ``out_dir`` (``last.ckpt`` on a tie); corrupt ones,
    weights-only ones and, with ``run_id``, other runs' are reported and skipped."""
    out_dir = Path(out_dir)
    best: Checkpoint | None = None
    for path in [out_dir / "last.ckpt", *step_checkpoint_files(out_dir)]:
        if not path.is_file():
            continue
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
            continue
        if ckpt.optimizer is None:
            log.warning("skipping %s: weights only, not a training checkpoint", path)
            continue
        if run_id is not None and ckpt.meta.get("run_id") != run_id:
            log.warning("skipping %s: written by run %s, not by this folder's run %s", path,
                        ckpt.meta.get("run_id") or "(no id)", run_id)
            continue
        if best is None or ckpt.meta.get("step", 0) > best.meta.get("step", 0):
            best = ckpt
    return best
