"""The package stays readable: no module over 600 lines, and the engine never imports the API above it."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "v2idetr"


def test_no_module_over_600_lines() -> None:
    long = {p.relative_to(SRC).as_posix(): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_lower_layers_do_not_import_the_api() -> None:
    """api.py composes data, models, distill and engine; those never reach back up to it."""
    upward = re.compile(r"^\s*(from v2idetr import api|from v2idetr\.api import|import v2idetr\.api)", re.M)
    offenders = [p.relative_to(SRC).as_posix() for layer in ("data", "models", "distill", "engine")
                 for p in (SRC / layer).rglob("*.py") if upward.search(p.read_text())]
    assert not offenders, offenders


def test_deployment_does_not_load_the_trainer() -> None:
    """Running a student (`Detector`, `predict`, live video) needs no training code loaded."""
    import subprocess
    import sys

    code = ("import sys, v2idetr.deploy.runtime, v2idetr.deploy.predict, v2idetr.deploy.live; "
            "print(sorted(m for m in sys.modules if m.startswith('v2idetr.engine.trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
