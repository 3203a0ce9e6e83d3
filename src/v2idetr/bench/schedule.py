"""How many steps each row of `v2idetr bench accuracy` trains, and from which weights it starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from v2idetr.bench.rows import Row
from v2idetr.engine.checkpoint import step_checkpoint_path
from v2idetr.errors import ConfigError


def continued_schedule(steps: int) -> list[str]:
    """Overrides of a run that continues from another's weights (a student from its teacher's) for
    ``steps``: a warm-up of a tenth of them, not the config's, which is made for training from scratch."""
    return [f"train.steps={steps}", f"train.warmup_steps={max(1, steps // 10)}"]


@dataclass(frozen=True)
class Schedule:
    """Steps of every row. Without ``teacher_steps``/``student_steps`` every row trains ``steps``
    (students on top of their teacher's). With both, one lineage of weights as in ``v2idetr demo``:
    teachers start from the same seed's baseline at step ``steps - teacher_steps - student_steps``
    and train ``teacher_steps``, students train ``student_steps`` from their teacher, so every
    single-frame row has had ``steps`` optimiser steps. ``distill_steps`` trains every distillation
    row that many steps from its teacher instead, validated at each third of them (the best kept):
    students that learn from new labels (pseudo-labels) need more steps than a lineage's tail (then
    they have had more steps in all than the baseline: ``describe`` says how many)."""

    steps: int
    teacher_steps: int | None = None
    student_steps: int | None = None
    distill_steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: expected >= 1")
        if (self.teacher_steps is None) != (self.student_steps is None):
            raise ConfigError("--teacher-steps and --student-steps go together (one lineage of weights)")
        if self.lineage and not (min(self.teacher_steps, self.student_steps) >= 1 and self.teacher_start >= 1):
            raise ConfigError(
                f"--teacher-steps {self.teacher_steps} --student-steps {self.student_steps}: expected >= 1 each "
                f"and fewer than --steps {self.steps} together (the baseline's step the teachers start from)"
            )
        if self.distill_steps is not None and self.distill_steps < 1:
            raise ConfigError(f"--distill-steps {self.distill_steps}: expected >= 1")

    @property
    def lineage(self) -> bool:
        return self.teacher_steps is not None

    @property
    def student_start(self) -> int:
        """The baseline's step where its last ``student_steps`` begin (``student-from-baseline`` starts there)."""
        return self.steps - (self.student_steps or 0)

    def student_start_checkpoint(self, baseline_run: Path) -> Path:
        """The baseline's checkpoint at ``student_start`` (kept by its ``train.save_steps``)."""
        return step_checkpoint_path(baseline_run, self.student_start)

    @property
    def teacher_start(self) -> int:
        return self.student_start - (self.teacher_steps or 0)

    def describe(self, rows: Sequence[str] = ()) -> str:
        """The schedule in words; ``baseline-2x``'s steps only when it is among ``rows``."""
        twice = f" (baseline-2x: {2 * self.steps})" if "baseline-2x" in rows else ""
        longer = ""
        if self.distill_steps:
            before = self.teacher_start + (self.teacher_steps or 0) if self.lineage else self.steps
            longer = (f"; students {self.distill_steps} steps from their teacher, validated every {self._eval_every()} "
                      f"({before + self.distill_steps} in all, the baseline {self.steps})")
        if not self.lineage:
            return f"{self.steps} steps per row{twice}; students on top of their teacher's{longer}"
        if longer:
            return (f"one lineage: baseline {self.steps} steps{twice}; teachers {self.teacher_steps} from the "
                    f"baseline's step {self.teacher_start}{longer}")
        return (f"one lineage: baseline {self.steps} steps{twice}; teachers "
                f"{self.teacher_steps} from the baseline's step {self.teacher_start}; students {self.student_steps} "
                "from their teacher (every single-frame row has had as many steps as the baseline)")

    def _eval_every(self) -> int:
        assert self.distill_steps is not None
        return max(1, self.distill_steps // 3)

    def settings(self) -> list[int | None]:
        """What a benchmark folder records (`check_settings`); ``distill_steps`` only when given, so
        folders made before it keep matching."""
        steps = [self.steps, self.teacher_steps, self.student_steps]
        return steps if self.distill_steps is None else [*steps, self.distill_steps]

    def overrides(self, row: Row, baseline_run: Path) -> list[str]:
        """The row's step overrides (they come after the user's, which they must win over);
        ``baseline_run``: the folder of the baseline run a lineage's teacher starts from."""
        if row.kind == "distill" and (self.distill_steps or self.lineage):
            distill = ([*continued_schedule(self.distill_steps), f"train.eval_every={self._eval_every()}"]
                       if self.distill_steps else continued_schedule(self.student_steps or self.steps))
            if row.start == "baseline":
                return [*distill, f"train.init_from={self.student_start_checkpoint(baseline_run)}"]
            return distill
        if row.kind == "train" and row.starts_from:  # a second round, from its teacher's weights
            return continued_schedule(self.teacher_steps or self.steps)
        if not self.lineage:
            return [f"train.steps={self.steps * row.steps_factor}"]
        if row.config == "teacher":
            start = step_checkpoint_path(baseline_run, self.teacher_start)
            return [*continued_schedule(self.teacher_steps or self.steps), f"train.init_from={start}"]
        steps = self.steps * row.steps_factor
        if row.name != "baseline":
            return [f"train.steps={steps}"]
        # validates and keeps the checkpoint at the teachers' start step, and keeps the one at the
        # student-steps-before-the-end step, where student-from-baseline starts
        return [f"train.steps={steps}", f"train.eval_every={self.teacher_start}",
                f"train.keep_last={steps // self.teacher_start + 1}",
                f"train.save_steps=[{self.student_start}]"]
