"""Errors that users see. Each one names the file, the record and the field at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what was expected."""

    file: str
    record: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.record, f"field '{self.field}'" if self.field else "") if p)
        return f"{self.file}: {where}: {self.message}" if where else f"{self.file}: {self.message}"


class V2IDetrError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class DatasetError(V2IDetrError):
    """A dataset could not be read; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem] | Problem, header: str = "dataset is invalid"):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.header = header
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{header} ({len(self.problems)} problem(s)):\n{shown}{more}")


class ConfigError(V2IDetrError):
    """A configuration key is unknown, has the wrong type or an invalid value."""


class TrainingError(V2IDetrError):
    """Training cannot go on (e.g. the loss keeps diverging)."""


class CheckpointError(V2IDetrError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where the program stands, so the clean-up Ctrl-C gets runs for it too
    (the command line exits with the signal's status, 143)."""
