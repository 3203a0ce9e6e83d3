"""Hungarian matcher: optimal against brute force, empty targets, guards."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert

from v2idetr.errors import ConfigError
from v2idetr.models.matcher import NONFINITE_COST, HungarianMatcher


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 4]`` valid normalised cxcywh boxes."""
    xy = torch.rand(n, 2, generator=gen) * 0.6 + 0.1
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([xy + wh / 2, wh], 1)


def _targets(sizes: list[int], num_classes: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": _random_boxes(n, gen), "labels": torch.randint(0, num_classes, (n,), generator=gen)}
        for n in sizes
    ]


def _brute_force(cost: torch.Tensor) -> float:
    """Minimum total cost of a one-to-one assignment of min(Q, N) pairs, by enumeration."""
    q, n = cost.shape
    if q >= n:
        return min(
            sum(cost[r, c].item() for c, r in enumerate(rows)) for rows in itertools.permutations(range(q), n)
        )
    return min(
        sum(cost[r, c].item() for r, c in enumerate(cols)) for cols in itertools.permutations(range(n), q)
    )


def test_matches_brute_force_on_random_cases():
    gen = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher()
    for _ in range(12):
        b = int(torch.randint(1, 4, (1,), generator=gen))
        q = int(torch.randint(1, 6, (1,), generator=gen))
        c = int(torch.randint(1, 4, (1,), generator=gen))
        sizes = torch.randint(0, 5, (b,), generator=gen).tolist()
        outputs = {
            "pred_logits": torch.randn(b, q, c, generator=gen) * 3,
            "pred_boxes": torch.cat(
                [torch.rand(b, q, 2, generator=gen), torch.rand(b, q, 2, generator=gen) * 0.5], -1
            ),
        }
        targets = _targets(sizes, c, gen)
        indices = matcher(outputs, targets)
        assert len(indices) == b
        for i, (rows, cols) in enumerate(indices):
            n = sizes[i]
            assert rows.dtype == cols.dtype == torch.int64
            assert len(rows) == len(cols) == min(q, n)
            assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
            if n == 0:
                continue
            cost = matcher.cost_matrix(
                outputs["pred_logits"][i], outputs["pred_boxes"][i], targets[i]["labels"], targets[i]["boxes"]
            )
            assert cost[rows, cols].sum().item() == pytest.approx(_brute_force(cost), abs=1e-4)


def test_cost_terms_follow_their_definitions():
    """One prediction, one target: the cost is the documented weighted sum."""
    matcher = HungarianMatcher(
        cost_class=2.0, cost_bbox=5.0, cost_giou=3.0, focal_alpha=0.25, focal_gamma=2.0
    )
    logit = torch.tensor([[0.3, -1.2]])
    pred = torch.tensor([[0.5, 0.5, 0.4, 0.4]])
    tgt = torch.tensor([[0.6, 0.5, 0.4, 0.2]])
    p = torch.sigmoid(torch.tensor(-1.2))
    pos = 0.25 * (1 - p) ** 2 * -torch.log(p)
    neg = 0.75 * p**2 * -torch.log(1 - p)
    # pred xyxy (0.3,0.3,0.7,0.7), target (0.4,0.4,0.8,0.6): inter 0.06, union 0.16+0.08-0.06, hull 0.5*0.4
    iou = 0.06 / 0.18
    giou = iou - (0.2 - 0.18) / 0.2
    expected = 2.0 * (pos - neg) + 5.0 * (0.1 + 0.2) + 3.0 * -giou
    cost = matcher.cost_matrix(logit, pred, torch.tensor([1]), tgt)
    assert cost.shape == (1, 1)
    assert cost.item() == pytest.approx(expected.item(), rel=1e-5)


def test_prefers_the_right_class_and_box():
    """Two targets of different classes: each goes to the query that predicts it."""
    targets = [
        {"boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]]), "labels": torch.tensor([0, 1])}
    ]
    outputs = {
        "pred_logits": torch.tensor([[[-5.0, -5.0], [-5.0, 5.0], [5.0, -5.0]]]),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.3, 0.3], [0.7, 0.7, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]]),
    }
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 2, 1: 1}


def test_empty_targets_and_all_empty_batch():
    gen = torch.Generator().manual_seed(1)
    outputs = {
        "pred_logits": torch.randn(3, 4, 2, generator=gen),
        "pred_boxes": torch.rand(3, 4, 4, generator=gen),
    }
    matcher = HungarianMatcher()
    mixed = _targets([0, 2, 0], 2, gen)
    indices = matcher(outputs, mixed)
    assert [len(r) for r, _ in indices] == [0, 2, 0]
    assert all(r.dtype == torch.int64 and c.dtype == torch.int64 for r, c in indices)
    none = _targets([0, 0, 0], 2, gen)
    assert all(len(r) == 0 and len(c) == 0 for r, c in matcher(outputs, none))


def test_more_targets_than_queries():
    gen = torch.Generator().manual_seed(2)
    outputs = {
        "pred_logits": torch.randn(1, 2, 1, generator=gen),
        "pred_boxes": torch.rand(1, 2, 4, generator=gen),
    }
    rows, cols = HungarianMatcher()(outputs, _targets([4], 1, gen))[0]
    assert sorted(rows.tolist()) == [0, 1] and len(set(cols.tolist())) == 2


def test_nonfinite_costs_are_replaced_not_raised(caplog):
    """A NaN prediction is matched last (its cost is NONFINITE_COST) and a warning is logged."""
    outputs = {
        "pred_logits": torch.tensor([[[float("nan")], [0.0]]]),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]]),
    }
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([0])}]
    with caplog.at_level("WARNING"):
        rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert rows.tolist() == [1] and cols.tolist() == [0]
    assert "non-finite" in caplog.text and f"{NONFINITE_COST:g}" in caplog.text


def test_label_out_of_range_names_the_image():
    outputs = {"pred_logits": torch.zeros(1, 2, 2), "pred_boxes": torch.rand(1, 2, 4)}
    targets = [
        {
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
            "labels": torch.tensor([2]),
            "image_id": torch.tensor(17),
        }
    ]
    with pytest.raises(ConfigError, match=r"image_id 17.*'labels'.*\[0, 2\)"):
        HungarianMatcher()(outputs, targets)


def test_rejects_all_zero_costs():
    with pytest.raises(ConfigError, match="cost_class"):
        HungarianMatcher(cost_class=0.0, cost_bbox=0.0, cost_giou=0.0)


def test_runs_without_grad_and_leaves_inputs_untouched():
    logits = torch.randn(1, 3, 2, requires_grad=True)
    boxes = torch.rand(1, 3, 4, requires_grad=True)
    targets = [
        {
            "boxes": box_convert(torch.tensor([[0.1, 0.1, 0.4, 0.5]]), "xyxy", "cxcywh"),
            "labels": torch.tensor([1]),
        }
    ]
    rows, _ = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, targets)[0]
    assert not rows.requires_grad and logits.grad is None
