"""No host syncs in forward: student, teacher and the deployed graph compile to one graph each."""

from __future__ import annotations

import pytest
import torch

from v2idetr.config import load_config, shipped_configs
from v2idetr.deploy.inference_model import InferenceModel
from v2idetr.models.build import build_model

SMALL = ["model.hidden_dim=32", "model.enc_layers=1", "model.dec_layers=2", "model.ffn_dim=64",
         "model.num_queries=10", "model.dn_number=4", "model.msi_points=2"]


def _model(config: str) -> tuple[torch.nn.Module, int]:
    cfg = load_config(shipped_configs() / config, SMALL)
    torch.manual_seed(0)
    model = build_model(cfg, 2)
    return (model[0] if isinstance(model, tuple) else model), cfg.data.num_frames


def _fullgraph(module: torch.nn.Module) -> torch.nn.Module:
    # The "eager" backend runs dynamo's capture (what fails on a graph break) without inductor's
    # minutes of code generation on a CPU; the GPU check times the inductor build.
    torch._dynamo.reset()
    return torch.compile(module, fullgraph=True, backend="eager")


@pytest.mark.parametrize("config", ["student-tiny.yaml", "teacher-tiny.yaml", "student-lite.yaml"])
def test_inference_compiles_to_one_graph_with_eager_results(config: str) -> None:
    model, frames = _model(config)
    deployed = InferenceModel(model.eval(), num_select=10).eval()
    shape = (2, frames, 3, 64, 96) if frames > 1 else (2, 3, 64, 96)
    images = torch.rand(shape)
    sizes, orig = torch.tensor([[64, 96], [48, 80]]), torch.tensor([[480, 720], [300, 500]])
    with torch.no_grad():
        expected = deployed(images, sizes, orig)
        got = _fullgraph(deployed)(images, sizes, orig)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("config", ["student-tiny.yaml", "teacher-tiny.yaml"])
def test_training_forward_with_denoising_compiles_to_one_graph(config: str) -> None:
    model, frames = _model(config)
    model.train()
    images = torch.rand((2, frames, 3, 64, 64) if frames > 1 else (2, 3, 64, 64))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[1, :, 48:] = True
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    out = _fullgraph(model)(images, masks, targets)
    out["pred_logits"].sum().backward()
    assert out["pred_boxes"].shape == (2, 10, 4)
