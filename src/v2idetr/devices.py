"""Which torch device a config or CLI name (``auto``, ``cpu``, ``cuda``, ``cuda:1``) means.

Its own module because training, deployment and the benchmarks all resolve a name the same way, and
the deployment code should not import the trainer to do it.
"""

from __future__ import annotations

import torch

from v2idetr.errors import V2IDetrError


def resolve_device(name: str, what: str = "device") -> torch.device:
    """``auto``: CUDA when this machine has it, else the CPU; a CUDA name without CUDA is an error that
    names ``what`` gave it (a config key, a flag)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise V2IDetrError(f"{what} = {name!r}: CUDA is not available on this machine (give cpu, or auto to use CUDA "
                           "only where there is one)")
    return device
