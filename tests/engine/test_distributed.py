"""`torchrun` data parallelism on CPU (gloo): same losses as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from v2idetr import api
from v2idetr.demo import QUICK_MODEL

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# Exact equivalence needs identical padded batches (no crop: every frame has the same size) and no
# denoising queries (their noise comes from each process's own random stream).
EXACT = [*QUICK_MODEL, "model.dn_number=0", "data.crop=0", "train.threads=1", "train.log_every=1"]


def _torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "v2idetr", *args, "--no-progress"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "train"]


def test_two_processes_match_one_with_the_same_global_batch(tiny_synth, tmp_path: Path) -> None:
    data = [f"data.train={tiny_synth.train_json}", f"data.val={tiny_synth.val_json}", "train.steps=4",
            "train.eval_every=4"]
    api.train(str(CONFIGS / "student-tiny.yaml"), [*EXACT, *data, "data.batch_size=4"], tmp_path / "one",
              progress=False)
    _torchrun(["train", "--config", str(CONFIGS / "student-tiny.yaml"), *EXACT, *data, "data.batch_size=2",
               "--out", str(tmp_path / "two")])
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4  # rank 0 alone writes the log: no duplicated lines
    assert two == pytest.approx(one, rel=1e-4)
    assert one[0] != pytest.approx(one[-1], rel=1e-3)  # it did train
    evals = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "eval"]
    reference = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["type"] == "eval"]
    # Validation is sharded over the processes and gathered: the same frames, the same scores.
    assert len(evals) == 1 and evals[0]["AP50"] == pytest.approx(reference[0]["AP50"], abs=1e-3)
    assert (tmp_path / "two" / "best.ckpt").is_file() and (tmp_path / "two" / "last.ckpt").is_file()
    assert not list((tmp_path / "two").glob(".*.tmp"))


def test_distillation_runs_under_torchrun(tiny_synth, tmp_path: Path) -> None:
    data = [f"data.train={tiny_synth.train_json}", "train.steps=2", "train.eval_every=0", "data.batch_size=2"]
    api.train(str(CONFIGS / "teacher-tiny.yaml"), [*EXACT, *data, "model.msi_points=2"], tmp_path / "teacher",
              progress=False)
    _torchrun(["distill", "--teacher", str(tmp_path / "teacher" / "last.ckpt"), "--config",
               str(CONFIGS / "student-tiny.yaml"), *EXACT, *data, "--out", str(tmp_path / "student")])
    records = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["loss_tfd"] > 0 and r["loss_cqd"] > 0 for r in train)
    model, _, meta = api.load_model(tmp_path / "student" / "last.ckpt")
    assert meta["kind"] == "detector"
