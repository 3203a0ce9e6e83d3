"""The whole image detector: output contract, denoising, attention masking, gradients, eval."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models.denoising import DenoisingGenerator
from v2idetr.models.detector import Detector, build_detector

NUM_CLASSES = 3


def _cfg(**kw) -> ModelConfig:
    base = dict(
        backbone="resnet18",
        backbone_stages=3,
        num_feature_levels=3,
        hidden_dim=32,
        nheads=4,
        enc_layers=1,
        dec_layers=2,
        ffn_dim=64,
        enc_points=2,
        dec_points=2,
        num_queries=10,
        dn_number=12,
    )
    return ModelConfig(**{**base, **kw})


def _model(**kw) -> Detector:
    torch.manual_seed(0)
    return build_detector(_cfg(**kw), NUM_CLASSES)


def _batch():
    """B=2, 64 x 96; image 1 is 48 x 64 padded bottom/right and has no targets."""
    images = torch.randn(2, 3, 64, 96)
    masks = torch.zeros(2, 64, 96, dtype=torch.bool)
    masks[1, 48:] = True
    masks[1, :, 64:] = True
    images = images.masked_fill(masks[:, None], 0.0)
    targets = [
        {"boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    return images, masks, targets


def _check_head(out: dict, b: int, q: int) -> None:
    assert out["pred_logits"].shape == (b, q, NUM_CLASSES)
    assert out["pred_boxes"].shape == (b, q, 4)
    assert torch.isfinite(out["pred_logits"]).all()
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()


@pytest.mark.parametrize(("two_stage", "box_refine", "dn"), list(itertools.product([True, False], repeat=3)))
def test_output_contract(two_stage, box_refine, dn):
    model = _model(two_stage=two_stage, box_refine=box_refine, dn_number=12 if dn else 0)
    model.train()
    images, masks, targets = _batch()
    out = model(images, masks, targets)
    _check_head(out, 2, 10)
    assert len(out["aux_outputs"]) == 1
    _check_head(out["aux_outputs"][0], 2, 10)
    assert ("enc_outputs" in out) == two_stage
    if two_stage:
        _check_head(out["enc_outputs"], 2, 10)
    assert ("dn_outputs" in out) == dn and ("dn_meta" in out) == dn
    if dn:
        meta = out["dn_meta"]
        # Largest image has 2 targets -> groups of 2 positives + 2 negatives; 12 // 4 = 3 groups.
        assert meta["num_groups"] == 3 and meta["num_dn"] == 12
        _check_head(out["dn_outputs"], 2, 12)
        assert len(out["dn_outputs"]["aux_outputs"]) == 1
        q0, t0 = meta["pairs"][0]
        assert q0.tolist() == [0, 1, 4, 5, 8, 9] and t0.tolist() == [0, 1, 0, 1, 0, 1]
        assert meta["pairs"][1][0].numel() == 0 and meta["pairs"][1][1].numel() == 0


def test_batch_without_targets_skips_denoising_and_eval_never_denoises():
    model = _model()
    images, masks, targets = _batch()
    empty = [targets[1], targets[1]]
    model.train()
    assert "dn_outputs" not in model(images, masks, empty)
    model.eval()
    with torch.no_grad():
        first = model(images, masks, targets)
        second = model(images, masks)
    assert "dn_outputs" not in first and "dn_meta" not in first
    torch.testing.assert_close(first["pred_logits"], second["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(first["pred_boxes"], second["pred_boxes"], rtol=0, atol=0)


def test_clip_input_uses_the_key_frame():
    model = _model().eval()
    images, masks, _ = _batch()
    clip = torch.stack([images, torch.randn_like(images)], 1)  # [B, T=2, 3, H, W], key frame first
    with torch.no_grad():
        torch.testing.assert_close(model(clip, masks)["pred_boxes"], model(images, masks)["pred_boxes"])


def test_positive_denoising_queries_start_near_their_target():
    torch.manual_seed(1)
    gen = DenoisingGenerator(NUM_CLASSES, 16, dn_number=40, label_noise=0.0, box_noise=0.4)
    _, _, targets = _batch()
    dn = gen(targets, num_queries=10)
    assert dn is not None
    boxes = targets[0]["boxes"]
    half = torch.cat([boxes[:, 2:], boxes[:, 2:]], -1) / 2
    q_idx, t_idx = dn.meta["pairs"][0]

    def edge_shift(queries):
        got = box_convert(dn.ref_boxes[0, queries], "cxcywh", "xyxy")
        return (got - box_convert(boxes[t_idx], "cxcywh", "xyxy")).abs() / half[t_idx]

    positive = edge_shift(q_idx)
    assert (positive <= 0.4 + 1e-5).all()  # every edge moved by at most box_noise * size / 2
    # The matching negative of each positive sits max_targets slots later in its group.
    negative = edge_shift(q_idx + dn.meta["max_targets"])
    assert (negative >= 0.4 - 1e-5).all() and (negative <= 0.8 + 1e-5).all()
    # No label noise: the content of a positive is its target label's embedding.
    torch.testing.assert_close(dn.content[0, q_idx], gen.label_embed(targets[0]["labels"][t_idx]))
    assert dn.content.shape == (2, dn.meta["num_dn"], 16) and dn.meta["num_groups"] == 10


def test_label_noise_flips_some_labels():
    torch.manual_seed(0)
    gen = DenoisingGenerator(NUM_CLASSES, 16, dn_number=400, label_noise=1.0, box_noise=0.4)
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([1])}]
    dn = gen(targets, num_queries=10)
    q_idx, _ = dn.meta["pairs"][0]
    same = (dn.content[0, q_idx] == gen.label_embed.weight[1]).all(-1).float().mean().item()
    # Flip probability 0.5 to a uniformly drawn class (which may be the same): about 2/3 keep label 1.
    assert 0.45 < same < 0.85


def test_attention_mask_blocks_denoising_leakage():
    model = _model().eval()  # eval: no dropout; denoising built by hand below
    images, masks, targets = _batch()
    with torch.no_grad():
        memory = model.encode(model.extract_features(images, masks))
        content, ref, _ = model.select_queries(memory)
        plain = model.decode(memory, content, ref)
        dn = model.denoising(targets, model.num_queries)
        n, size = dn.meta["num_dn"], 2 * dn.meta["max_targets"]

        def run(dn_content, dn_ref):
            return model.decode(
                memory,
                torch.cat([dn_content, content], 1),
                torch.cat([dn_ref, ref], 1),
                attn_mask=dn.attn_mask,
            )

        base = run(dn.content, dn.ref_boxes)
        other_content = dn.content.clone()
        other_content[:, size:] = torch.randn_like(other_content[:, size:])  # change groups 1..G-1
        other_ref = dn.ref_boxes.clone()
        other_ref[:, size:] = torch.rand_like(other_ref[:, size:]) * 0.5 + 0.25
        changed = run(other_content, other_ref)
    # Matching queries: unchanged, and identical to a decode without any denoising queries.
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(changed[key][:, n:], base[key][:, n:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(base[key][:, n:], plain[key], atol=1e-5, rtol=1e-5)
        # Group 0 cannot see the other groups either; the changed groups did change.
        torch.testing.assert_close(changed[key][:, :size], base[key][:, :size], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(changed[key][:, size:n], base[key][:, size:n])


def _surrogate_loss(out: dict) -> torch.Tensor:
    """Touches every output the criterion would (all layers, proposals, denoising)."""
    heads = [out, *out["aux_outputs"], out.get("enc_outputs"), out.get("dn_outputs")]
    return sum((o["pred_logits"].sigmoid() - 0.3).pow(2).sum() + o["pred_boxes"].sum() for o in heads if o)


def _grads_after_one_step(model: Detector, targets) -> dict[str, torch.Tensor | None]:
    """Second backward pass: at init some paths carry no gradient by design (zero-initialised
    sampling-offset / attention-weight / box-delta layers), one optimiser step opens them."""
    model.train()
    images, masks, _ = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        _surrogate_loss(model(images, masks, targets)).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        opt.step()
    return grads


def test_gradients_reach_backbone_projections_and_queries():
    model = _model()
    grads = _grads_after_one_step(model, _batch()[2])
    for name in (
        "backbone.body.conv1.weight",
        "backbone.body.layer2.0.conv1.weight",
        "backbone.input_proj.0.0.weight",
        "backbone.input_proj.2.0.weight",
        "level_embed",
        "query_selector.tgt_embed.weight",
        "query_selector.enc_class_embed.weight",
        "query_selector.enc_bbox_embed.layers.0.weight",
        "denoising.label_embed.weight",
        "decoder.bbox_embed.1.layers.0.weight",
        "encoder.layers.0.self_attn.sampling_offsets.weight",
    ):
        grad = grads[name]
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_learned_reference_boxes_get_gradients_without_two_stage():
    model = _model(two_stage=False, dn_number=0)
    grads = _grads_after_one_step(model, None)
    assert grads["query_selector.refbox_embed.weight"].abs().sum() > 0
    assert grads["query_selector.tgt_embed.weight"].abs().sum() > 0


def test_decode_returns_hidden_states_and_memory_levels_roundtrip():
    model = _model().eval()
    images, masks, _ = _batch()
    with torch.no_grad():
        feats = model.extract_features(images, masks)
        memory = model.encode(feats)
        content, ref, _ = model.select_queries(memory)
        out = model.decode(memory, content[:, :4], ref[:, :4], return_hidden=True)
    assert out["hidden"].shape == (2, 2, 4, 32) and out["references"].shape == (2, 2, 4, 4)
    assert out["pred_logits"].shape == (2, 4, NUM_CLASSES)
    levels = memory.levels()
    assert [lv.shape[-2:] for lv in levels] == [s.shape[-2:] for s in feats.srcs]
    torch.testing.assert_close(
        levels[1][:, :, 1, 2], memory.memory[:, int(memory.level_start_index[1]) + 1 * 6 + 2]
    )


def test_invalid_config_raises_config_error():
    with pytest.raises(ConfigError, match="model.hidden_dim"):
        build_detector(_cfg(hidden_dim=30, nheads=4), NUM_CLASSES)
    with pytest.raises(ConfigError, match="model.num_queries"):
        build_detector(_cfg(num_queries=0), NUM_CLASSES)


def test_intermediates_for_distillation_and_forward_features():
    model = _model()
    model.train()
    images, masks, targets = _batch()
    torch.manual_seed(3)
    out = model(images, masks, targets, return_intermediates=True)
    memory = out["memory"]
    assert memory.memory.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 32)
    assert out["query_content"].shape == (2, 10, 32) and out["query_ref_boxes"].shape == (2, 10, 4)
    assert out["hidden"].shape == (2, 2, 10, 32)  # matching queries only, not the denoising ones
    # The last hidden state is what the last class head read.
    torch.testing.assert_close(model.decoder.class_embed[-1](out["hidden"][-1]), out["pred_logits"])
    # forward == forward_features(extract_features(...)) with the same denoising draws.
    torch.manual_seed(3)
    again = model.forward_features(model.extract_features(images, masks), targets)
    torch.testing.assert_close(again["pred_boxes"], out["pred_boxes"])
    torch.testing.assert_close(again["dn_outputs"]["pred_logits"], out["dn_outputs"]["pred_logits"])
