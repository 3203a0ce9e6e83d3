"""A resumable, distributed-aware training sampler.

The order of epoch ``e`` is a permutation drawn from ``seed`` and ``e`` only, so a run resumed at
(epoch, position) sees exactly the samples an uninterrupted run would have seen, and each rank of
a distributed run takes a disjoint, equally long slice of it. With ``weights``, an epoch is as many
draws with replacement in proportion to them (distillation's teacher-chosen frames).
``MixedSampler`` puts a fixed number of unlabelled frames in every batch (distillation on frames
nobody labelled); ``UnlabelledCoverage`` counts how many of them a run has reached. With
``batch_scales`` every batch gets one short side drawn from them (``data.multiscale=batch``), also
from ``seed`` and the epoch only, so a resumed run draws the same sizes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from v2idetr.data.index import FrameRecord


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one epoch, starting at a given position.

    With ``with_epoch`` it yields ``(epoch, index)`` pairs: the dataset then draws the item's
    augmentation from the epoch that comes with it, not from its own ``set_epoch`` state, so
    persistent DataLoader workers (whose dataset copies never see ``set_epoch``) stay exact. With
    ``batch_scales`` too, ``(epoch, index, short_side)``: each run of ``batch_size`` consecutive
    indices (a loader's batch) shares one short side drawn from ``batch_scales``.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 weights: Sequence[float] | None = None, with_epoch: bool = False,
                 batch_scales: Sequence[int] | None = None, batch_size: int = 1):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        if batch_scales is not None and (not with_epoch or not batch_scales or batch_size < 1):
            raise ValueError("batch_scales: expected one or more sizes, with_epoch and a batch_size >= 1")
        if weights is not None:
            if not shuffle or len(weights) != size or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"weights: expected {size} non-negative numbers, not all 0, with shuffle")
            self.weights: torch.Tensor | None = torch.as_tensor(weights, dtype=torch.float64)
        else:
            self.weights = None
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.with_epoch = with_epoch
        self.batch_scales = list(batch_scales) if batch_scales is not None else None
        self.batch_size = batch_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """``start``: how many of this rank's samples of the epoch were already consumed."""
        self.epoch, self.start = epoch, start

    def _generator(self, stream: int = 0) -> torch.Generator:
        """The epoch's generator: stream 0 draws the order, stream 1 the batch sizes."""
        epoch_seed = self.seed * 100_003 + self.epoch
        return torch.Generator().manual_seed(epoch_seed if stream == 0 else epoch_seed * 2 + 1)

    def _order(self) -> list[int]:
        g = self._generator()
        if self.shuffle:
            order = _draw(list(range(self.size)), self.weights, g)
        else:
            order = list(range(self.size))
        per_rank = -(-self.size // self.world_size)
        order = (order * (1 + per_rank * self.world_size // self.size))[: per_rank * self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Any]:
        order = self._order()
        if self.batch_scales is not None:
            scales = self._scales(-(-len(order) // self.batch_size))
            return iter([(self.epoch, i, scales[k // self.batch_size])
                         for k, i in enumerate(order[self.start :], start=self.start)])
        order = order[self.start :]
        return iter([(self.epoch, i) for i in order] if self.with_epoch else order)

    def _scales(self, batches: int) -> list[int]:
        """One short side per batch of the epoch, from a generator of its own: the order stays as without."""
        assert self.batch_scales is not None
        drawn = torch.randint(len(self.batch_scales), (batches,), generator=self._generator(stream=1))
        return [self.batch_scales[j] for j in drawn.tolist()]

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.start)


def _draw(items: list[int], weights: torch.Tensor | None, g: torch.Generator) -> list[int]:
    """``items`` shuffled, or as many draws with replacement in proportion to ``weights`` (one per item)."""
    if weights is None:
        return [items[i] for i in torch.randperm(len(items), generator=g).tolist()]
    return [items[i] for i in torch.multinomial(weights, len(items), replacement=True, generator=g).tolist()]


class MixedSampler(ResumableSampler):
    """Batches of ``batch_size`` indices of which ``per_batch`` are unlabelled items, in order.

    An epoch is one pass over the labelled items (``unlabelled[i]`` False), ``batch_size - per_batch``
    of them per batch, each batch topped up with ``per_batch`` unlabelled ones from a shuffle of
    them (repeated if the epoch needs more). A loader must use the same ``batch_size`` and
    ``drop_last=True``. ``weights`` (one per item) make each group's draws proportional to them.
    Under ``world_size`` processes each rank's batches have the same make-up.
    """

    def __init__(self, unlabelled: Sequence[bool], batch_size: int, per_batch: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, weights: Sequence[float] | None = None, with_epoch: bool = False,
                 batch_scales: Sequence[int] | None = None):
        super().__init__(len(unlabelled), shuffle=True, seed=seed, rank=rank, world_size=world_size, weights=weights,
                         with_epoch=with_epoch, batch_scales=batch_scales, batch_size=batch_size)
        self.labelled_items = [i for i, u in enumerate(unlabelled) if not u]
        self.unlabelled_items = [i for i, u in enumerate(unlabelled) if u]
        self.per_batch = per_batch
        if not 0 < per_batch < batch_size:
            raise ValueError(f"unlabelled items per batch: expected 1..{batch_size - 1}, got {per_batch}")
        if not self.unlabelled_items:
            raise ValueError("no unlabelled items to mix into the batches")
        if self.batches_per_rank < 1:
            raise ValueError(f"{len(self.labelled_items)} labelled items: too few for one batch of "
                             f"{batch_size - per_batch} labelled items per process ({world_size} processes)")

    @property
    def batches_per_rank(self) -> int:
        return len(self.labelled_items) // self.world_size // (self.batch_size - self.per_batch)

    def _group(self, items: list[int], g: torch.Generator) -> list[int]:
        weights = None if self.weights is None else self.weights[items]
        return _draw(items, weights, g)

    def _order(self) -> list[int]:
        g = self._generator()
        labelled = self._group(self.labelled_items, g)[self.rank :: self.world_size]
        shuffled = self._group(self.unlabelled_items, g)
        need = self.batches_per_rank * self.per_batch * self.world_size
        unlabelled = (shuffled * (1 + need // len(shuffled)))[:need][self.rank :: self.world_size]
        n_lab, n_unl = self.batch_size - self.per_batch, self.per_batch
        order: list[int] = []
        for b in range(self.batches_per_rank):
            order += labelled[b * n_lab : (b + 1) * n_lab] + unlabelled[b * n_unl : (b + 1) * n_unl]
        return order

    def __len__(self) -> int:
        return max(0, self.batches_per_rank * self.batch_size - self.start)


class UnlabelledCoverage:
    """How many of the training set's unlabelled frames (an archive's, a label budget's) this process
    has taught on since the run (re)started: the progress over frames nobody labelled."""

    def __init__(self, key_frames: list[FrameRecord]):
        self.total = sum(1 for f in key_frames if not f.labelled)
        self.seen: set[int] = set()

    def update(self, targets: list[dict[str, torch.Tensor]]) -> None:
        self.seen.update(int(t["image_id"]) for t in targets if not bool(t.get("labelled", True)))

    def describe(self) -> str:
        return f"{len(self.seen)}/{self.total}"
