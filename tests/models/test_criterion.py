"""Set criterion: perfect predictions, gradients, key names, denoising pairs, empty frames, normalisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from v2idetr.config import LossConfig
from v2idetr.errors import ConfigError
from v2idetr.models.criterion import SetCriterion, _average_counts, build_criterion
from v2idetr.models.matcher import HungarianMatcher

C = 3
Q = 5


def _criterion(**kw) -> SetCriterion:
    return SetCriterion(C, HungarianMatcher(), {"loss_class": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}, **kw)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.1]]), "labels": torch.tensor([1])},
    ]


def _perfect(targets, assignment: list[list[int]], q: int = Q) -> dict[str, torch.Tensor]:
    """Query ``assignment[i][j]`` of image i sits exactly on target j with logit +12; others -12."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.full((len(targets), q, C), -12.0)
    boxes = torch.cat(
        [torch.rand(len(targets), q, 2, generator=gen) * 0.5 + 0.25, torch.full((len(targets), q, 2), 0.1)],
        -1,
    )
    for i, t in enumerate(targets):
        for j, qi in enumerate(assignment[i]):
            logits[i, qi, t["labels"][j]] = 12.0
            boxes[i, qi] = t["boxes"][j]
    return {"pred_logits": logits, "pred_boxes": boxes}


def _dn(targets, groups: int = 2) -> tuple[dict, dict]:
    """Denoising outputs laid out as DINO: per group, one positive per target slot then negatives."""
    max_n = max(len(t["labels"]) for t in targets)
    n_dn = groups * 2 * max_n
    pairs, assignment = [], []
    for t in targets:
        n = len(t["labels"])
        q = torch.cat([torch.arange(n) + g * 2 * max_n for g in range(groups)]).long()
        pairs.append((q, torch.arange(n).repeat(groups)))
        assignment.append(q.tolist())
    expanded = [
        {"boxes": t["boxes"].repeat(groups, 1), "labels": t["labels"].repeat(groups)} for t in targets
    ]
    dn = _perfect(expanded, assignment, q=n_dn)
    return dn, {"pairs": pairs, "num_dn": n_dn, "num_groups": groups, "max_targets": max_n}


def _full_outputs(targets) -> dict:
    out = _perfect(targets, [[1, 3], [], [0]])
    out["aux_outputs"] = [_perfect(targets, [[0, 4], [], [2]]), _perfect(targets, [[2, 1], [], [4]])]
    out["enc_outputs"] = _perfect(targets, [[4, 0], [], [3]])
    dn, meta = _dn(targets)
    dn["aux_outputs"] = [_dn(targets)[0]]
    out["dn_outputs"], out["dn_meta"] = dn, meta
    return out


def test_perfect_predictions_give_near_zero_losses():
    targets = _targets()
    losses = _criterion()(_full_outputs(targets), targets)
    for key, value in losses.items():
        assert torch.isfinite(value), key
        limit = 1e-3 if "class" in key or key == "loss" else 1e-5
        assert value.item() < limit, (key, value.item())


def test_keys_have_the_documented_suffixes():
    targets = _targets()
    losses = _criterion()(_full_outputs(targets), targets)
    suffixes = ["", "_0", "_1", "_enc", "_dn", "_dn_0"]
    expected = {f"{base}{s}" for base in ("loss_class", "loss_bbox", "loss_giou") for s in suffixes} | {
        "loss"
    }
    assert set(losses) == expected
    no_aux = _criterion(aux=False)(_full_outputs(targets), targets)
    kept = {f"{base}{s}" for base in ("loss_class", "loss_bbox", "loss_giou") for s in ("", "_enc", "_dn")}
    assert set(no_aux) == kept | {"loss"}


def test_total_is_the_weighted_sum_by_base_name():
    targets = _targets()
    gen = torch.Generator().manual_seed(4)
    out = {
        "pred_logits": torch.randn(3, Q, C, generator=gen),
        "pred_boxes": torch.rand(3, Q, 4, generator=gen) * 0.5 + 0.2,
    }
    out["aux_outputs"] = [
        {"pred_logits": torch.randn(3, Q, C, generator=gen), "pred_boxes": out["pred_boxes"] * 0.9}
    ]
    crit = SetCriterion(C, HungarianMatcher(), {"loss_class": 1.5, "loss_bbox": 0.5, "loss_giou": 3.0})
    losses = crit(out, targets)
    weights = {"loss_class": 1.5, "loss_bbox": 0.5, "loss_giou": 3.0}
    expected = sum(
        weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v for k, v in losses.items() if k != "loss"
    )
    assert losses["loss"].item() == pytest.approx(float(expected), rel=1e-6)


def test_component_values_match_hand_computation():
    """Single image, two queries, one target: matched query terms computed by hand."""
    target = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]), "labels": torch.tensor([0])}]
    out = {
        "pred_logits": torch.tensor([[[1.0], [-2.0]]]),
        "pred_boxes": torch.tensor([[[0.55, 0.5, 0.4, 0.2], [0.1, 0.1, 0.05, 0.05]]]),
    }
    crit = SetCriterion(1, HungarianMatcher(), {"loss_class": 1.0, "loss_bbox": 1.0, "loss_giou": 1.0})
    losses = crit(out, target)

    def focal(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
        p_t = p * y + (1 - p) * (1 - y)
        return (0.25 * y + 0.75 * (1 - y)) * (1 - p_t) ** 2 * ce

    assert losses["loss_class"].item() == pytest.approx(focal(1.0, 1) + focal(-2.0, 0), rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(0.05 + 0.2, rel=1e-5)
    # pred xyxy (0.35,0.4,0.75,0.6) vs target (0.3,0.3,0.7,0.7): inter 0.35*0.2, union 0.08+0.16-0.07
    iou = 0.07 / 0.17
    hull = 0.45 * 0.4
    assert losses["loss_giou"].item() == pytest.approx(1 - (iou - (hull - 0.17) / hull), rel=1e-5)


def test_dn_pairs_are_honoured_even_when_another_target_is_closer():
    """Denoising query 0 sits exactly on target 0 but is paired with target 1: it pays for target 1."""
    targets = [
        {"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]), "labels": torch.tensor([0, 1])}
    ]
    out = _perfect(targets, [[0, 1]])
    dn = {
        "pred_logits": torch.full((1, 4, C), -12.0),
        "pred_boxes": torch.tensor(
            [[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1]]]
        ),
    }
    dn["pred_logits"][0, 0, 1] = 12.0
    out["dn_outputs"] = dn
    out["dn_meta"] = {"pairs": [(torch.tensor([0]), torch.tensor([1]))]}
    losses = _criterion()(out, targets)
    assert losses["loss_bbox_dn"].item() == pytest.approx(0.8, rel=1e-5)  # |0.3-0.7| + |0.3-0.7|, 1 pair
    assert losses["loss_giou_dn"].item() > 1.0  # disjoint boxes: GIoU < 0
    assert losses["loss_class_dn"].item() < 1e-3  # the paired query predicts target 1's class
    assert losses["loss_bbox"].item() < 1e-6  # matching queries are untouched by the pairs


def test_batch_without_targets_is_finite_with_zero_box_losses():
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(2)]
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, Q, C, generator=gen, requires_grad=True)
    boxes = torch.rand(2, Q, 4, generator=gen, requires_grad=True)
    aux = {"pred_logits": logits * 0.5, "pred_boxes": boxes}
    out = {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": [aux], "enc_outputs": dict(aux)}
    losses = _criterion()(out, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    for key, value in losses.items():
        if "bbox" in key or "giou" in key:
            assert value.item() == 0.0, key
    assert losses["loss_class"].item() > 0.0
    losses["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # Perfectly confident no-object predictions cost nothing.
    quiet = _criterion()({"pred_logits": torch.full((2, Q, C), -12.0), "pred_boxes": boxes.detach()}, targets)
    assert quiet["loss"].item() < 1e-3


def test_duplicating_the_batch_leaves_losses_unchanged():
    targets = _targets()
    gen = torch.Generator().manual_seed(6)
    out = {
        "pred_logits": torch.randn(3, Q, C, generator=gen),
        "pred_boxes": torch.rand(3, Q, 4, generator=gen) * 0.5 + 0.2,
    }
    dn, meta = _dn(targets)
    dn = {
        "pred_logits": dn["pred_logits"] + torch.randn_like(dn["pred_logits"]),
        "pred_boxes": dn["pred_boxes"] * 0.9,
    }
    out["dn_outputs"], out["dn_meta"] = dn, meta
    single = _criterion()(out, targets)

    def twice(d: dict) -> dict:
        return {k: torch.cat([v, v]) for k, v in d.items()}

    doubled = twice({"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]})
    doubled["dn_outputs"] = twice(dn)
    doubled["dn_meta"] = {"pairs": meta["pairs"] * 2}
    double = _criterion()(doubled, targets + targets)
    assert set(single) == set(double)
    for key in single:
        assert double[key].item() == pytest.approx(single[key].item(), rel=1e-5), key
    assert single["loss_bbox_dn"].item() > 0


def test_sgd_step_decreases_the_loss():
    targets = _targets()
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(3, Q, C, generator=gen).requires_grad_()
    box_params = torch.randn(3, Q, 4, generator=gen).requires_grad_()
    crit = _criterion()
    opt = torch.optim.SGD([logits, box_params], lr=0.01)

    def loss() -> torch.Tensor:
        return crit({"pred_logits": logits, "pred_boxes": box_params.sigmoid()}, targets)["loss"]

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


def test_match_reuses_the_matcher():
    targets = _targets()
    out = _perfect(targets, [[1, 3], [], [0]])
    indices = _criterion().match(out, targets)
    assert [r.tolist() for r, _ in indices] == [[1, 3], [], [0]]
    assert [c.tolist() for _, c in indices] == [[0, 1], [], [0]]


def test_iou_aware_class_target_is_the_iou():
    """Varifocal: the positive's class loss is smallest where sigmoid(logit) equals the box IoU."""
    target = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]), "labels": torch.tensor([0])}]
    pred = torch.tensor([[[0.5, 0.5, 0.4, 0.2]]])  # inside the target, half its area: IoU 0.5
    crit = SetCriterion(
        1, HungarianMatcher(), {"loss_class": 1.0, "loss_bbox": 1.0, "loss_giou": 1.0}, iou_aware=True
    )
    values = {}
    for logit in (-1.0, 0.0, 1.0):
        values[logit] = crit({"pred_logits": torch.tensor([[[logit]]]), "pred_boxes": pred}, target)[
            "loss_class"
        ].item()
    assert values[0.0] < values[-1.0] and values[0.0] < values[1.0]
    # The default focal loss keeps pushing the positive towards 1 whatever the IoU.
    plain = SetCriterion(1, HungarianMatcher(), {"loss_class": 1.0, "loss_bbox": 1.0, "loss_giou": 1.0})
    focal = [
        plain({"pred_logits": torch.tensor([[[x]]]), "pred_boxes": pred}, target)["loss_class"].item()
        for x in (-1.0, 0.0, 1.0)
    ]
    assert focal[0] > focal[1] > focal[2]


def test_build_criterion_from_config():
    crit = build_criterion(
        LossConfig(loss_class=1.0, loss_bbox=4.0, loss_giou=3.0, cost_bbox=7.0, aux=False), 2
    )
    assert crit.weight_dict == {"loss_class": 1.0, "loss_bbox": 4.0, "loss_giou": 3.0}
    assert crit.matcher.cost_bbox == 7.0 and crit.aux is False and crit.num_classes == 2
    with pytest.raises(ConfigError, match="loss.loss_giou"):
        build_criterion(LossConfig(loss_giou=-1.0), 2)
    with pytest.raises(ConfigError, match="loss.focal_alpha"):
        build_criterion(LossConfig(focal_alpha=1.5), 2)
    with pytest.raises(ConfigError, match="missing"):
        SetCriterion(2, HungarianMatcher(), {"loss_class": 1.0})


def test_num_boxes_average_under_a_process_group(tmp_path):
    """One-process gloo group: the all-reduce path runs and keeps the counts (clamped to >= 1)."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert _average_counts([5, 0], torch.device("cpu")) == (5.0, 1.0)
    finally:
        dist.destroy_process_group()
