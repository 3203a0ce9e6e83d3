from __future__ import annotations

import pytest

from v2idetr.config import load_config
from v2idetr.data.clips import ClipSampling
from v2idetr.data.load import load_index
from v2idetr.data.synthetic import SynthResult
from v2idetr.engine.train_loader import build_train_loader, training_clips


def _batch_sizes(synth: SynthResult, multiscale: str, unlabelled_per_batch: int = 0) -> list[set[tuple[int, ...]]]:
    """The (h, w) sizes of the clips of each batch of two epochs' worth of batches."""
    cfg = load_config(None, ["data.train_sizes=[32,48,64]", "data.max_size=64", "data.batch_size=4",
                             "data.crop=0.5", f"data.multiscale={multiscale}"])
    index = load_index(synth.train_json)
    if unlabelled_per_batch:  # every other frame unlabelled
        for video in index.videos:
            for frame in video.frames[1::2]:
                frame.labelled = False
                frame.boxes, frame.labels = frame.boxes[:0], frame.labels[:0]
    dataset = training_clips(cfg, index, ClipSampling.of(cfg.data), with_unlabelled=unlabelled_per_batch > 0)
    loader, sampler = build_train_loader(cfg, dataset, str(synth.train_json), unlabelled_per_batch=unlabelled_per_batch)
    sizes = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        sizes += [{tuple(t["size"].tolist()) for t in batch.targets} for batch in loader]
    return sizes


@pytest.mark.parametrize("unlabelled_per_batch", [0, 2])
def test_multiscale_batch_makes_every_batch_one_size_crops_included(tiny_synth: SynthResult, unlabelled_per_batch: int) -> None:
    per_batch = _batch_sizes(tiny_synth, "batch", unlabelled_per_batch)
    assert all(len(sizes) == 1 for sizes in per_batch)
    assert len(set().union(*per_batch)) > 1  # and still several sizes over the run
    per_clip = _batch_sizes(tiny_synth, "clip", unlabelled_per_batch)
    assert any(len(sizes) > 1 for sizes in per_clip)  # each clip its own: most batches pad
