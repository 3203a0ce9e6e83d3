"""How a deployed model runs: eagerly, compiled by ``torch.compile``, or replayed as CUDA graphs.

- ``eager``: PyTorch op by op (every device; the reference).
- ``compile``: ``torch.compile(fullgraph=True)``: one graph per input shape, fused kernels. The
  model has no host syncs in ``forward`` (a CPU test holds it to that), so nothing breaks the graph.
- ``graph``: the compiled graph captured as a CUDA graph (``mode="reduce-overhead"``) and replayed:
  one launch per frame instead of hundreds, which is what batch-1 latency on a GPU is made of.
  CUDA only.

Both compiled engines specialise on the input shape: the first batch of each new shape (a video
keeps one; a last, shorter batch adds one) compiles, later ones replay. Give a fixed batch size
and frames of one size for steady latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from v2idetr.errors import ConfigError

ENGINES = ("eager", "compile", "graph")


def build_engine(model: torch.nn.Module, engine: str, device: torch.device) -> Callable[..., Any]:
    """``model`` (already on ``device``, in eval mode) wrapped as ``engine`` runs it."""
    if engine not in ENGINES:
        raise ConfigError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "eager":
        return model
    if engine == "graph" and device.type != "cuda":
        raise ConfigError(
            f"engine 'graph' replays CUDA graphs and needs a CUDA device, got {device}; "
            "on a CPU use engine 'compile' or 'eager'"
        )
    mode = "reduce-overhead" if engine == "graph" else None
    return torch.compile(model, fullgraph=True, dynamic=False, mode=mode)
