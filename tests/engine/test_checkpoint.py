from pathlib import Path

import numpy as np
import pytest
import torch

from v2idetr.engine.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    prune_step_checkpoints,
    restore_rng,
    save_checkpoint,
    step_checkpoint_path,
)
from v2idetr.errors import CheckpointError


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    path = save_checkpoint(
        tmp_path / "a.ckpt",
        model.state_dict(),
        {"step": 3, "config": {}},
        optimizer_state=opt.state_dict(),
        with_rng=True,
    )
    expected_draw = torch.rand(5)
    expected_np = np.random.rand(3)
    ckpt = load_checkpoint(path)
    assert ckpt.meta["step"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model[k], v)
    model2, opt2 = _model_and_optimizer()
    model2.load_state_dict(ckpt.model)
    opt2.load_state_dict(ckpt.optimizer)
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values(), strict=True):
        assert torch.equal(torch.as_tensor(a["exp_avg"]), torch.as_tensor(b["exp_avg"]))
    restore_rng(ckpt.rng_torch, ckpt.meta["rng"])
    assert torch.equal(torch.rand(5), expected_draw)
    assert np.array_equal(np.random.rand(3), expected_np)


def test_truncated_checkpoint_is_detected_and_previous_used(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    for step in (10, 20):
        save_checkpoint(
            step_checkpoint_path(tmp_path, step),
            model.state_dict(),
            {"step": step, "config": {}},
            optimizer_state=opt.state_dict(),
        )
    newest = step_checkpoint_path(tmp_path, 20)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=newest.name):
        load_checkpoint(newest)
    resumed = find_resume_checkpoint(tmp_path)
    assert resumed is not None and resumed.meta["step"] == 10


def test_foreign_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="x.ckpt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_prune_keeps_newest(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    for step in (1, 2, 3, 4):
        save_checkpoint(step_checkpoint_path(tmp_path, step), model.state_dict(), {"step": step})
    prune_step_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.ckpt")) == [
        "ckpt-00000003.ckpt",
        "ckpt-00000004.ckpt",
    ]


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    save_checkpoint(tmp_path / "a.ckpt", model.state_dict(), {})
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
