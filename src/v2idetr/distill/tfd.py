"""Target-guided Feature Distillation (DESIGN 2.2).

    L_TFD = sum_l sum_xy M_l(x,y) * mean_c (A(S_l)(c,x,y) - T_l(c,x,y))^2 / max(1, sum_l sum_xy M_l(x,y))

The squared error is averaged over channels (DESIGN writes the plain squared norm; the mean keeps
the loss weight independent of the model width). ``T`` is detached: only the student learns.
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
    ) -> Tensor:
        """``student``/``teacher``: L x ``[B, D, h_l, w_l]``; ``valid_ratios [B, L, 2]``."""
        if len(student) != len(teacher) or len(student) != len(self.adapters):
            raise ValueError(
                f"TFD got {len(student)} student and {len(teacher)} teacher levels, "
                f"built for {len(self.adapters)}"
            )
        shapes = [tuple(s.shape[-2:]) for s in student]
        masks = foreground_masks(targets, shapes, valid_ratios, self.mask)  # type: ignore[arg-type]
        total = student[0].new_zeros(())
        weight = student[0].new_zeros(())
        for adapter, s, t, m in zip(self.adapters, student, teacher, masks, strict=True):
            err = (adapter(s) - t.detach()).pow(2).mean(1)  # [B, h, w]
            total = total + (m * err).sum()
            weight = weight + m.sum()
        return total / weight.clamp(min=1.0)
