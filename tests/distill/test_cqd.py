import torch

from v2idetr.distill.cqd import CQDLoss


def _outputs(logits: torch.Tensor, boxes: torch.Tensor) -> dict:
    return {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}],
    }


def test_zero_when_student_agrees_with_teacher_even_if_unsure() -> None:
    logits = torch.tensor([[[1.5], [-0.2], [-3.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.3], [0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]]])
    loss = CQDLoss()(_outputs(logits, boxes), _outputs(logits, boxes))
    assert abs(loss.item()) < 1e-6


def test_disagreement_costs_more_and_follows_teacher_confidence() -> None:
    t_logits = torch.tensor([[[6.0], [-6.0]]])
    t_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    teacher = _outputs(t_logits, t_boxes)
    moved_confident = t_boxes.clone()
    moved_confident[0, 0, 0] += 0.1
    moved_unsure = t_boxes.clone()
    moved_unsure[0, 1, 0] += 0.1
    base = CQDLoss()(_outputs(t_logits, t_boxes), teacher)
    a = CQDLoss()(_outputs(t_logits, moved_confident), teacher)
    b = CQDLoss()(_outputs(t_logits, moved_unsure), teacher)
    assert a > b > base  # a box error on a confident teacher query weighs more


def test_gradient_reaches_student_only() -> None:
    s_logits = torch.zeros(1, 2, 1, requires_grad=True)
    s_boxes = torch.full((1, 2, 4), 0.3, requires_grad=True)
    t_logits = torch.ones(1, 2, 1, requires_grad=True)
    t_boxes = torch.full((1, 2, 4), 0.4, requires_grad=True)
    CQDLoss()(_outputs(s_logits, s_boxes), _outputs(t_logits, t_boxes)).backward()
    assert s_logits.grad is not None and s_boxes.grad is not None
    assert t_logits.grad is None and t_boxes.grad is None
