import pytest
import torch

from v2idetr.distill.cqd import CQDLoss, proposal_loss


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


def _enc(logits: torch.Tensor, valid: torch.Tensor) -> dict:
    return {"dense_logits": logits, "dense_valid": valid}


def test_proposal_term_is_zero_on_agreement_and_ignores_invalid_tokens() -> None:
    t = torch.tensor([[[4.0], [-4.0], [-4.0], [0.0]]])
    valid = torch.tensor([[True, True, True, False]])
    assert abs(proposal_loss(_enc(t, valid), _enc(t, valid)).item()) < 1e-6
    s = t.clone()
    s[0, 3] = 9.0  # disagreement on a padding token only
    assert abs(proposal_loss(_enc(s, valid), _enc(t, valid)).item()) < 1e-6


def test_proposal_term_penalises_missing_the_teachers_proposal_and_a_lookalike() -> None:
    """The student scoring low where the teacher is confident (a faint lesion), or high where the
    teacher is not (a look-alike), both cost; normalised by the teacher's foreground mass."""
    t = torch.tensor([[[5.0], [-5.0], [-5.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    missed = torch.tensor([[[-5.0], [-5.0], [-5.0]]])
    fooled = torch.tensor([[[5.0], [5.0], [-5.0]]])
    kl_missed = (t.sigmoid() * (t.sigmoid() / missed.sigmoid()).log()
                 + (1 - t.sigmoid()) * ((1 - t.sigmoid()) / (1 - missed.sigmoid())).log())[0, 0, 0]
    mass = torch.tensor(1.0)  # max(1, sum of teacher probabilities ~ 1.01)
    assert torch.isclose(proposal_loss(_enc(missed, valid), _enc(t, valid)), kl_missed / t.sigmoid().sum().clamp(min=mass),
                         rtol=1e-4)
    assert proposal_loss(_enc(fooled, valid), _enc(t, valid)) > 1.0


def test_cqd_adds_the_weighted_proposal_term_and_needs_both_views() -> None:
    logits = torch.tensor([[[1.0], [-1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    s_enc, t_enc = _enc(torch.zeros(1, 3, 1), valid), _enc(torch.tensor([[[3.0], [-3.0], [-3.0]]]), valid)
    plain = CQDLoss()(_outputs(logits, boxes), _outputs(logits, boxes), s_enc, t_enc)
    weighted = CQDLoss(proposal_weight=2.0)(_outputs(logits, boxes), _outputs(logits, boxes), s_enc, t_enc)
    assert abs(plain.item()) < 1e-6
    assert torch.isclose(weighted, 2.0 * proposal_loss(s_enc, t_enc))
    with pytest.raises(ValueError, match="enc_outputs"):
        CQDLoss(proposal_weight=1.0)(_outputs(logits, boxes), _outputs(logits, boxes))


def test_student_query_term_is_weighted_and_needs_both_outputs() -> None:
    logits = torch.tensor([[[2.0], [-2.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    # the student is sure of a box the teacher rejects when it looks at the same place
    own, verdict = _outputs(torch.tensor([[[3.0], [-2.0]]]), boxes), _outputs(torch.tensor([[[-3.0], [-2.0]]]), boxes)
    loss = CQDLoss(student_query_weight=0.5)(_outputs(logits, boxes), _outputs(logits, boxes),
                                            student_own=own, teacher_on_student=verdict)
    assert loss.item() == pytest.approx(0.5 * CQDLoss().agreement(own, verdict).item())
    agreeing = CQDLoss(student_query_weight=0.5)(_outputs(logits, boxes), _outputs(logits, boxes),
                                                student_own=verdict, teacher_on_student=verdict)
    assert agreeing.item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() > 0.25
    with pytest.raises(ValueError, match="student-query"):
        CQDLoss(student_query_weight=1.0)(_outputs(logits, boxes), _outputs(logits, boxes))


def test_class_term_per_teacher_detection_does_not_shrink_with_more_empty_queries() -> None:
    """class_norm='teacher': one confident teacher query disagreed with costs the same among 2 or 20 queries
    (averaging over queries divides it by their number)."""
    def pair(n: int) -> tuple[dict, dict]:
        t = torch.full((1, n, 1), -9.0)
        t[0, 0, 0] = 4.0
        s = t.clone()
        s[0, 0, 0] = -2.0
        boxes = torch.full((1, n, 4), 0.3)
        return _outputs(s, boxes), _outputs(t, boxes)

    teacher_norm = [CQDLoss(class_norm="teacher")(*pair(n)).item() for n in (2, 20)]
    query_norm = [CQDLoss()(*pair(n)).item() for n in (2, 20)]
    assert teacher_norm[0] == pytest.approx(teacher_norm[1], rel=1e-3)
    assert query_norm[0] == pytest.approx(10 * query_norm[1], rel=1e-3)
    with pytest.raises(ValueError, match="class_norm"):
        CQDLoss(class_norm="boxes")
