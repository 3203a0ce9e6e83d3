"""Shared fixtures: tiny synthetic datasets written once per session, and small model configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any
from unittest.mock import patch

import av
import numpy as np
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


def _trained_checkpoint(config: str, steps: int, synth: SynthResult, out: Path) -> Path:
    """``config`` (a shipped image config, shrunk by TINY_MODEL) trained ``steps`` steps on ``synth``."""
    from v2idetr import api

    api.train(
        str(Path(__file__).resolve().parents[1] / "configs" / config),
        [*TINY_MODEL, f"data.train={synth.train_json}", f"train.steps={steps}", "train.eval_every=0"],
        out,
        progress=False,
    )
    return out / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synth: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A student-tiny image model trained for a few steps (weights fit the tiny data, not good ones)."""
    return _trained_checkpoint("student-tiny.yaml", 4, tiny_synth, tmp_path_factory.mktemp("tiny_ckpt"))


@pytest.fixture(scope="session")
def lite_checkpoint(tiny_synth: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A student-lite image model (ImageNet EfficientNet-Lite0 from the installed package) after 2 steps."""
    return _trained_checkpoint("student-lite.yaml", 2, tiny_synth, tmp_path_factory.mktemp("lite_ckpt"))


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


def _write_video(path: Path, frames: int = 7, size: tuple[int, int] = (48, 32), fps: int = 10) -> Path:
    """A tiny MPEG-4 video whose frame i is uniformly grey at 20 * i (mod 256)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), 20 * i % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture()
def write_video() -> Callable[..., Path]:
    """``write_video(path, frames=7, size=(48, 32), fps=10)``: a tiny MPEG-4 video, frame i grey at 20 * i."""
    return _write_video


@pytest.fixture()
def starting_weights() -> Callable[[], Any]:
    """``with starting_weights() as seen: api.train(...)``: the run does not train; ``seen`` gets the
    model's weights as training would start from them (what init_from and init_from_teacher load)."""
    from v2idetr.engine.trainer import Trainer, TrainResult

    @contextmanager
    def capture() -> Iterator[list[dict[str, torch.Tensor]]]:
        seen: list[dict[str, torch.Tensor]] = []

        def fit(self, resume=False):
            seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            return TrainResult(self.out_dir, 0, None, None)

        with patch.object(Trainer, "fit", fit):
            yield seen

    return capture


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip on a machine without a CUDA device (CI); scripts/gpu-check.sh runs them."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
