"""Where every reader collects problems (``ProblemLog``) and turns them into an index or an error
(``Scan.finish``), with the checks the readers share (box inside the frame, integer ids, video name
filters, JSON loading); ``v2idetr.data.validate`` reads the same ``Scan``, so readers and validation
cannot disagree.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2idetr.data.index import DatasetIndex
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)

# Annotation tools round box corners differently; boxes up to this far outside the frame are clipped.
BOX_TOLERANCE = 1.0


@dataclass
class ProblemLog:
    """Every problem found while reading one dataset, with what was dropped because of it.

    ``fatal`` problems (unreadable file, missing top-level key, no frames) leave nothing to drop,
    so they stop a read even with ``skip_invalid``.
    """

    file: str
    problems: list[Problem] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    fatal: bool = False

    def add(
        self,
        record: str,
        field_name: str,
        message: str,
        *,
        dropped: str = "",
        fatal: bool = False,
        file: str | Path | None = None,
    ) -> None:
        self.problems.append(
            Problem(str(file) if file is not None else self.file, record, field_name, message)
        )
        self.dropped.append(dropped)
        self.fatal = self.fatal or fatal

    def __len__(self) -> int:
        return len(self.problems)


@dataclass
class Scan:
    """What a reader found: the index of its valid records (None if nothing was readable) and the problems."""

    index: DatasetIndex | None
    log: ProblemLog

    def finish(self, skip_invalid: bool = False) -> DatasetIndex:
        """The index, or ``DatasetError`` with every problem.

        With ``skip_invalid`` the offending records are left out (already done while scanning),
        each is described in ``DatasetIndex.skipped`` and their count is logged.
        """
        problems = self.log.problems
        if self.index is None or self.log.fatal or (problems and not skip_invalid):
            hint = ""
            if problems and not self.log.fatal and self.index is not None:
                hint = ("; to leave the offending records out: --skip-invalid (data convert, data stats, predict) "
                        "or data.skip_invalid=true (train, distill)")
            raise DatasetError(problems, header=f"{self.log.file} is not a valid dataset{hint}")
        if problems:
            self.index.skipped.extend(
                f"{p}{f' -> dropped {d}' if d else ''}"
                for p, d in zip(problems, self.log.dropped, strict=True)
            )
            log.warning(
                "%s: left out %d invalid record(s) (skip_invalid); see DatasetIndex.skipped",
                self.log.file,
                len(problems),
            )
        if self.index.num_frames == 0:
            raise DatasetError(
                Problem(
                    self.log.file, "", "images", "no frames left to use (every frame was excluded or invalid)"
                ),
                header=f"{self.log.file} is empty",
            )
        return self.index


def as_int(value: Any) -> int | None:
    """An integer (integral floats such as ``640.0`` accepted, booleans refused), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def check_box(
    x1: float, y1: float, x2: float, y2: float, width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, str]:
    """Clip an ``x1, y1, x2, y2`` pixel box to the frame, or say why it is invalid.

    Returns ``(box, "")`` or ``(None, message)``. Boxes with non-positive size or reaching more than
    ``BOX_TOLERANCE`` pixels outside the ``width x height`` frame are invalid.
    """
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, f"box has a non-finite coordinate: {[x1, y1, x2, y2]}"
    if x2 <= x1 or y2 <= y1:
        return None, f"box has non-positive width or height (w={x2 - x1:g}, h={y2 - y1:g}); expected > 0"
    t = BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return None, (
            f"box x1,y1,x2,y2=({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width}x{height} image "
            f"by more than {t:g} px"
        )
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has no area inside the {width}x{height} image"
    return (cx1, cy1, cx2, cy2), ""


def name_matches(video_name: str, wanted: set[str]) -> str | None:
    """The entry of ``wanted`` naming this video: its full name or its last path component."""
    if video_name in wanted:
        return video_name
    tail = video_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return tail if tail in wanted else None


def load_json(path: Path, plog: ProblemLog) -> Any:
    """Parse a JSON file; an unreadable or malformed file is a fatal problem (with line and column)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        plog.add("", "", f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", fatal=True)
    except (OSError, UnicodeDecodeError) as exc:
        plog.add("", "", f"cannot read the file ({type(exc).__name__}: {exc})", fatal=True)
    return None
