"""Target-guided Feature Distillation (DESIGN 2.2).

    L_TFD = sum_l sum_xy M_l(x,y) * mean_c (A(S_l)(c,x,y) - T_l(c,x,y))^2 / max(1, sum_l sum_xy M_l(x,y))

The squared error is averaged over channels (DESIGN writes the plain squared norm; the mean keeps
the loss weight independent of the model width). ``T`` is detached: only the student learns.

Residual target (``distill.tfd_target=residual``; this code's option): the teacher's features are
mostly its per-frame transform of the key frame, which an image student can only imitate, and only
a small part is what the support frames add (docs/METHOD.md). The target is then the frozen starting
student's own features plus that part, ``A(S_start) + (T_clip - T_static)`` with ``T_static`` the
teacher's features on its key frame repeated T times: the student is asked to move by what the
temporal context adds, not to copy the teacher's per-frame transform.
"""

from __future__ import annotations

from torch import Tensor, nn

from v2idetr.distill.masks import foreground_masks


class TFDLoss(nn.Module):
    """Masked, normalised MSE between adapted student and (detached) teacher feature maps."""

    def __init__(self, student_dim: int, teacher_dim: int, num_levels: int, mask: str = "gaussian"):
        super().__init__()
        self.mask = mask
        self.adapters = nn.ModuleList(
            nn.Identity() if student_dim == teacher_dim else nn.Conv2d(student_dim, teacher_dim, 1)
            for _ in range(num_levels)
        )

    def forward(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: list[dict[str, Tensor]],
        valid_ratios: Tensor,
        student_start: list[Tensor] | None = None,
        teacher_static: list[Tensor] | None = None,
    ) -> Tensor:
        """``student``/``teacher``: L x ``[B, D, h_l, w_l]``; ``valid_ratios [B, L, 2]``; with
        ``student_start`` and ``teacher_static`` (same shapes) the residual target (module docstring)."""
        if len(student) != len(teacher) or len(student) != len(self.adapters):
            raise ValueError(
                f"TFD got {len(student)} student and {len(teacher)} teacher levels, "
                f"built for {len(self.adapters)}"
            )
        shapes = [tuple(s.shape[-2:]) for s in student]
        masks = foreground_masks(targets, shapes, valid_ratios, self.mask)  # type: ignore[arg-type]
        total = student[0].new_zeros(())
        weight = student[0].new_zeros(())
        starts = student_start if student_start is not None else [None] * len(student)
        statics = teacher_static if teacher_static is not None else [None] * len(student)
        for adapter, s, t, m, s0, t0 in zip(self.adapters, student, teacher, masks, starts, statics, strict=True):
            goal = t.detach() if t0 is None else (t - t0).detach() + adapter(s0.detach())
            err = (adapter(s) - goal).pow(2).mean(1)  # [B, h, w]
            total = total + (m * err).sum()
            weight = weight + m.sum()
        return total / weight.clamp(min=1.0)
