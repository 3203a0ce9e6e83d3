import torch

from v2idetr.distill.tfd import TFDLoss

TARGETS = [{"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}, {"boxes": torch.tensor([[0.3, 0.3, 0.4, 0.2]])}]
RATIOS = torch.ones(2, 2, 2)


def _maps(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 16, 16, generator=g), torch.randn(2, 8, 8, 8, generator=g)]


def test_zero_when_student_equals_teacher() -> None:
    loss = TFDLoss(8, 8, 2)(_maps(0), _maps(0), TARGETS, RATIOS)
    assert loss.item() == 0.0


def test_gradient_only_reaches_the_student() -> None:
    student = [m.requires_grad_() for m in _maps(0)]
    teacher = [m.requires_grad_() for m in _maps(1)]
    loss = TFDLoss(8, 8, 2)(student, teacher, TARGETS, RATIOS)
    assert loss > 0
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_only_foreground_counts() -> None:
    student, teacher = _maps(0), _maps(0)
    teacher[0] = teacher[0].clone()
    teacher[0][:, :, 0, 0] += 100.0  # background corner, far from every box
    assert TFDLoss(8, 8, 2, mask="binary")(student, teacher, TARGETS, RATIOS).item() == 0.0
    teacher[0][:, :, 8, 8] += 1.0  # centre of the first image's box
    assert TFDLoss(8, 8, 2, mask="binary")(student, teacher, TARGETS, RATIOS).item() > 0.0


def test_adapter_when_widths_differ() -> None:
    tfd = TFDLoss(8, 4, 2)
    teacher = [m[:, :4] for m in _maps(1)]
    loss = tfd(_maps(0), teacher, TARGETS, RATIOS)
    loss.backward()
    assert tfd.adapters[0].weight.grad is not None


def test_residual_target_asks_for_the_temporal_part_only() -> None:
    """Target A(S_start) + (T_clip - T_static): zero where the student has moved from its start by what
    the support frames add, whatever the teacher's per-frame transform is."""
    tfd = TFDLoss(8, 8, 2)
    start, clip, static = _maps(0), _maps(1), _maps(2)
    moved = [s + (c - t) for s, c, t in zip(start, clip, static, strict=True)]
    assert tfd(moved, clip, TARGETS, RATIOS, start, static).item() < 1e-10
    assert tfd(moved, clip, TARGETS, RATIOS).item() > 0.1  # the teacher's own target is far from it
    # without temporal context (clip == static) the target is the start itself
    assert tfd(start, static, TARGETS, RATIOS, start, static).item() == 0.0
    assert tfd(clip, static, TARGETS, RATIOS, start, static).item() > 0.1
