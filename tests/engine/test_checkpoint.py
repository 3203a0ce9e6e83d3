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


def test_prune_spares_protected_steps_without_counting_them(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    for step in (1, 2, 3, 4):
        save_checkpoint(step_checkpoint_path(tmp_path, step), model.state_dict(), {"step": step})
    prune_step_checkpoints(tmp_path, keep=2, protected=[2])
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.ckpt")) == [
        "ckpt-00000002.ckpt",
        "ckpt-00000003.ckpt",
        "ckpt-00000004.ckpt",
    ]


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    save_checkpoint(tmp_path / "a.ckpt", model.state_dict(), {})
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_model_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    from v2idetr import api
    from v2idetr.config import config_to_dict, load_config
    from v2idetr.models.build import build_model

    cfg = load_config(None, ["model.hidden_dim=32", "model.nheads=4", "model.enc_layers=1", "model.dec_layers=2",
                             "model.ffn_dim=64", "model.num_queries=10", "model.backbone_stages=3",
                             "model.num_feature_levels=3"])
    torch.manual_seed(0)
    model = build_model(cfg, 2).eval()
    save_checkpoint(tmp_path / "m.ckpt", model.state_dict(),
                    {"config": config_to_dict(cfg), "num_classes": 2, "kind": "detector"})
    loaded, loaded_cfg, _ = api.load_model(tmp_path / "m.ckpt")
    assert loaded_cfg == cfg
    x, mask = torch.randn(2, 3, 64, 80), torch.zeros(2, 64, 80, dtype=torch.bool)
    with torch.no_grad():
        a, b = model(x, mask), loaded(x, mask)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_checkpoint_of_another_model_names_the_mismatched_keys(tmp_path: Path) -> None:
    from v2idetr import api
    from v2idetr.config import config_to_dict, load_config

    model, _ = _model_and_optimizer()
    cfg = load_config(None, ["model.hidden_dim=32", "model.nheads=4"])
    save_checkpoint(tmp_path / "other.ckpt", model.state_dict(),
                    {"config": config_to_dict(cfg), "num_classes": 1, "kind": "detector"})
    with pytest.raises(CheckpointError, match=r"other\.ckpt.*missing keys.*unexpected keys.*'0\.weight'"):
        api.load_model(tmp_path / "other.ckpt")
