"""Shared fixtures: tiny synthetic datasets written once per session, and small model configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from v2idetr.data.synthetic import SynthResult, generate
from v2idetr.demo import QUICK_MODEL

# Tests run on 2-core CI machines: one intra-op thread avoids oversubscription with pytest.
torch.set_num_threads(1)

TINY_MODEL = [*QUICK_MODEL, "model.msi_points=2", "train.log_every=1", "train.threads=1"]


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """6 short ultrasound videos at 64 px (train/val split by video)."""
    out = tmp_path_factory.mktemp("synth") / "us"
    return generate(out, preset="ultrasound", videos=6, frames=8, size=64, seed=3, val_fraction=0.34)


@pytest.fixture(scope="session")
def tiny_model() -> list[str]:
    """Overrides that shrink any shipped config to a model that trains a step in well under a second."""
    return list(TINY_MODEL)


@pytest.fixture()
def configs_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synth: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A student-tiny image model trained for a few steps (weights fit the tiny data, not good ones)."""
    from v2idetr import api

    out = tmp_path_factory.mktemp("tiny_ckpt")
    config = Path(__file__).resolve().parents[1] / "configs" / "student-tiny.yaml"
    api.train(
        str(config),
        [*TINY_MODEL, f"data.train={tiny_synth.train_json}", "train.steps=4", "train.eval_every=0"],
        out,
        progress=False,
    )
    return out / "last.ckpt"


@pytest.fixture(scope="session")
def teacher_ckpt(tiny_synth: SynthResult, tiny_model: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher-tiny video teacher (MSI over 3-frame clips) trained for a few steps."""
    from v2idetr import api

    out = tmp_path_factory.mktemp("teacher")
    api.train(
        str(Path(__file__).resolve().parents[1] / "configs" / "teacher-tiny.yaml"),
        [*tiny_model, f"data.train={tiny_synth.train_json}", f"data.val={tiny_synth.val_json}", "train.steps=3",
         "train.eval_every=0"],
        out,
        progress=False,
    )
    return out / "best.ckpt"
