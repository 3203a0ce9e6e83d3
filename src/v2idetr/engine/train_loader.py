"""The training data stream: clips of the training key frames, their sampler and loader, batches forever.

Kept apart from the loop (`engine.trainer`) because what a batch holds is decided here: labelled key
frames only for every detection loss, or ``unlabelled_per_batch`` unlabelled ones mixed into each
batch for distillation; sampling weights per frame; one shard per process under ``torchrun``; and an
order that resumes mid-epoch exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from v2idetr.config import Config
from v2idetr.data.clips import ClipDataset, ClipSampling
from v2idetr.data.collate import Batch, collate_clips
from v2idetr.data.index import DatasetIndex
from v2idetr.data.sampler import MixedSampler, ResumableSampler
from v2idetr.data.transforms import build_train_transforms
from v2idetr.engine.inference import is_labelled
from v2idetr.errors import V2IDetrError


def training_clips(cfg: Config, index: DatasetIndex, clips: ClipSampling, with_unlabelled: bool) -> ClipDataset:
    """Every labelled key frame of ``index`` with its clip; the unlabelled ones too when ``with_unlabelled``."""
    return ClipDataset(
        index,
        num_frames=clips.num_frames,
        mode=clips.mode,
        window=clips.window,
        stride=clips.stride,
        transforms=build_train_transforms(cfg.data),
        seed=cfg.train.seed,
        skip_unreadable=cfg.data.skip_invalid,
        key_filter=None if with_unlabelled else is_labelled,
    )


def build_train_loader(
    cfg: Config,
    dataset: ClipDataset,
    source: str,
    *,
    unlabelled_per_batch: int = 0,
    frame_weights: dict[int, float] | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> tuple[DataLoader, ResumableSampler]:
    """Batches of ``data.batch_size`` labelled key frames (+ ``unlabelled_per_batch`` unlabelled ones).

    ``source`` names the training set in errors; ``frame_weights``: sampling weight per key frame's
    ``image_id`` (default uniform); ``rank`` / ``world_size``: this process's shard of every epoch."""
    mixed = unlabelled_per_batch
    unlabelled = [not f.labelled for f in dataset.key_frames]
    labelled = len(unlabelled) - sum(unlabelled)
    if labelled < cfg.data.batch_size * world_size:
        raise V2IDetrError(
            f"training set {source} has {labelled} labelled key frames, fewer than "
            f"data.batch_size={cfg.data.batch_size}" + (f" x {world_size} processes" if world_size > 1 else "")
        )
    weights = None
    if frame_weights is not None:
        missing = [f.image_id for f in dataset.key_frames if f.image_id not in frame_weights]
        if missing:
            raise V2IDetrError(f"no sampling weight for training frames with image ids {missing[:10]}")
        weights = [frame_weights[f.image_id] for f in dataset.key_frames]
    if mixed and labelled == len(unlabelled):
        raise V2IDetrError(
            f"training set {source} has no unlabelled frames to put {mixed} of in each batch: "
            "mark some ('labelled': false; `v2idetr data add-frames`, `v2idetr data sparsify`) or set the "
            "unlabelled share to 0")
    # data.multiscale=batch: the sampler draws one short side per batch, so no batch pads between sizes
    scales = cfg.data.train_sizes if cfg.data.multiscale == "batch" else None
    sampler = (
        MixedSampler(unlabelled, cfg.data.batch_size + mixed, mixed, seed=cfg.train.seed, rank=rank,
                     world_size=world_size, weights=weights, with_epoch=True, batch_scales=scales)
        if mixed
        else ResumableSampler(len(dataset), shuffle=True, seed=cfg.train.seed, rank=rank,
                              world_size=world_size, weights=weights, with_epoch=True, batch_scales=scales,
                              batch_size=cfg.data.batch_size)
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size + mixed,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.data.workers,
        collate_fn=collate_clips,
        pin_memory=pin_memory,
        # its own generator: creating an iterator must not draw from the global RNG, which the
        # model uses (denoising noise) and which checkpoints restore for an exact resume
        generator=torch.Generator().manual_seed(cfg.train.seed),
        # workers live for the whole run (no re-spawn, no re-read of the index each epoch): the
        # sampler sends each item's epoch along, so their dataset copies need no set_epoch
        persistent_workers=cfg.data.workers > 0,
        prefetch_factor=4 if cfg.data.workers > 0 else None,
    )
    return loader, sampler


def infinite_batches(
    loader: DataLoader, sampler: ResumableSampler, epoch: int, position: int
) -> Iterator[tuple[int, int, Batch]]:
    """Yields (epoch, batches already taken in this epoch, batch) forever, resuming mid-epoch."""
    batch_size = loader.batch_size or 1
    while True:
        sampler.set_epoch(epoch, start=position * batch_size)
        loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        for batch in loader:
            position += 1
            yield epoch, position, batch
        epoch, position = epoch + 1, 0
