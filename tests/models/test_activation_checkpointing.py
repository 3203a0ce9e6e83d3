"""train.activation_checkpointing: the same loss and gradients, with the layers' activations recomputed."""

from __future__ import annotations

import pytest
import torch

from v2idetr.config import load_config, shipped_configs
from v2idetr.models.build import build
from v2idetr.models.transformer import LayerStack

SMALL = ["model.hidden_dim=32", "model.enc_layers=2", "model.dec_layers=2", "model.ffn_dim=64",
         "model.num_queries=10", "model.dn_number=4", "model.msi_points=2", "model.msi_layers=2",
         "model.dropout=0.1"]


def _loss_and_grads(config: str, checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, int]:
    cfg = load_config(shipped_configs() / config, [*SMALL, f"train.activation_checkpointing={checkpointing}"])
    torch.manual_seed(0)
    built = build(cfg, 2)
    model = built.model.train()
    frames = cfg.data.num_frames
    images = torch.rand((2, frames, 3, 64, 64) if frames > 1 else (2, 3, 64, 64))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[1, 40:] = True
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[0.3, 0.3, 0.1, 0.1]]), "labels": torch.tensor([0])}]
    torch.manual_seed(1)  # dropout and denoising draw the same numbers in both runs
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = model(images, masks, targets)
    total = built.criterion(outputs, targets)["loss"]
    total.backward()
    stacks = sum(isinstance(m, LayerStack) and m.activation_checkpointing for m in model.modules())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return total.detach(), grads, stacks, saved[0]


@pytest.mark.parametrize(("config", "stacks"), [("student-tiny.yaml", 2), ("teacher-tiny.yaml", 3)])
def test_checkpointed_layers_give_identical_gradients(config: str, stacks: int) -> None:
    loss, grads, off, kept = _loss_and_grads(config, False)
    loss_ckpt, grads_ckpt, on, kept_ckpt = _loss_and_grads(config, True)
    assert (off, on) == (0, stacks)  # encoder + decoder (+ MSI)
    print(f"{config}: activations kept for backward {kept / 1e6:.1f} MB -> {kept_ckpt / 1e6:.1f} MB")
    assert kept_ckpt < 0.95 * kept  # the backbone (not checkpointed) keeps most of it at this size
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_a_run_with_activation_checkpointing_trains(tiny_synth, tiny_model, tmp_path) -> None:
    from v2idetr import api

    result = api.train(str(shipped_configs() / "teacher-tiny.yaml"),
                       [*tiny_model, f"data.train={tiny_synth.train_json}", "train.steps=2", "train.eval_every=0",
                        "train.activation_checkpointing=true"], tmp_path / "run", progress=False)
    assert result.step == 2 and not result.stopped_early


@pytest.mark.cuda
def test_checkpointing_lowers_peak_cuda_memory() -> None:
    peaks = []
    for on in (False, True):
        cfg = load_config(shipped_configs() / "teacher-tiny.yaml", [f"train.activation_checkpointing={on}"])
        torch.manual_seed(0)
        built = build(cfg, 2)
        model = built.model.cuda().train()
        images = torch.rand(4, 3, 3, 256, 256, device="cuda")
        masks = torch.zeros(4, 256, 256, dtype=torch.bool, device="cuda")
        targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]], device="cuda"),
                    "labels": torch.tensor([1], device="cuda")} for _ in range(4)]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        built.criterion(model(images, masks, targets), targets)["loss"].backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
        del model, built
        torch.cuda.empty_cache()
    print(f"peak memory without / with checkpointing: {peaks[0] / 2**20:.0f} / {peaks[1] / 2**20:.0f} MB")
    assert peaks[1] < peaks[0]
