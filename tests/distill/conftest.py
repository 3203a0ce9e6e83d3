"""A tiny video teacher, trained once for the distillation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2idetr import api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def teacher_ckpt(tiny_synth, tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    api.train(
        str(ROOT / "configs" / "teacher-tiny.yaml"),
        [*tiny_model, f"data.train={tiny_synth.train_json}", f"data.val={tiny_synth.val_json}", "train.steps=3",
         "train.eval_every=0"],
        out,
        progress=False,
    )
    return out / "best.ckpt"
