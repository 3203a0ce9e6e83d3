"""A resumable, distributed-aware training sampler.

The order of epoch ``e`` is a permutation drawn from ``seed`` and ``e`` only, so a run resumed at
(epoch, position) sees exactly the samples an uninterrupted run would have seen, and each rank of
a distributed run takes a disjoint, equally long slice of it. With ``weights``, an epoch is as many
draws with replacement in proportion to them (distillation's teacher-chosen frames).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one epoch, starting at a given position."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 weights: Sequence[float] | None = None):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        if weights is not None:
            if not shuffle or len(weights) != size or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"weights: expected {size} non-negative numbers, not all 0, with shuffle")
            self.weights: torch.Tensor | None = torch.as_tensor(weights, dtype=torch.float64)
        else:
            self.weights = None
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """``start``: how many of this rank's samples of the epoch were already consumed."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = -(-self.size // self.world_size)
        order = (order * (1 + per_rank * self.world_size // self.size))[: per_rank * self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.start)
