"""Run a detector over every key frame of a dataset and collect per-frame detections."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from v2idetr.config import Config
from v2idetr.data.clips import ClipDataset
from v2idetr.data.collate import collate_clips
from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.data.transforms import build_eval_transforms
from v2idetr.models.postprocess import PostProcess

Predictions = dict[int, dict[str, np.ndarray]]


def is_labelled(frame: FrameRecord) -> bool:
    return frame.labelled


def is_unlabelled(frame: FrameRecord) -> bool:
    return not frame.labelled


def eval_clip_mode(cfg: Config) -> str:
    """Evaluation clips are deterministic: causal models keep ``past``, all others use ``adjacent``."""
    return "past" if cfg.data.clip_mode == "past" else "adjacent"


def build_eval_loader(
    cfg: Config, index: DatasetIndex, batch_size: int | None = None, shard: tuple[int, int] = (0, 1),
    keys: Callable[[FrameRecord], bool] | None = is_labelled,
) -> DataLoader:
    """Deterministic clips of every key frame ``keys`` accepts (by default the labelled ones; None:
    every frame); support frames may be any frame, so a clip is the same whichever keys are asked
    for. ``shard = (rank, world_size)`` keeps every ``world_size``-th frame from
    ``rank`` on (distributed evaluation, predictions gathered after)."""
    dataset: ClipDataset | Subset = ClipDataset(
        index,
        num_frames=cfg.data.num_frames,
        mode=eval_clip_mode(cfg),
        window=cfg.data.window,
        stride=cfg.data.stride,
        transforms=build_eval_transforms(cfg.data),
        seed=cfg.train.seed,
        key_filter=keys,
    )
    rank, world = shard
    if world > 1:
        dataset = Subset(dataset, range(rank, len(dataset), world))
    return DataLoader(
        dataset,
        batch_size=batch_size or cfg.data.batch_size,
        shuffle=False,
        num_workers=cfg.data.workers,
        collate_fn=collate_clips,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # leave the global RNG alone (exact resume)
    )


@torch.no_grad()
def predict_loader(
    model: nn.Module,
    postprocess: PostProcess,
    loader: DataLoader,
    device: torch.device,
    progress: bool = True,
    desc: str = "eval",
) -> Predictions:
    """Detections per ``image_id``: boxes ``[K,4]`` x1y1x2y2 pixels of the original frame, scores, labels."""
    was_training = model.training
    model.eval()
    predictions: Predictions = {}
    try:
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
            batch = batch.to(device)
            outputs = model(batch.images, batch.masks)
            sizes = torch.stack([t["orig_size"] for t in batch.targets]).to(device)
            for target, det in zip(batch.targets, postprocess(outputs, sizes), strict=True):
                predictions[int(target["image_id"])] = {
                    k: det[k].float().cpu().numpy() if k != "labels" else det[k].cpu().numpy()
                    for k in ("boxes", "scores", "labels")
                }
    finally:
        model.train(was_training)
    return predictions
