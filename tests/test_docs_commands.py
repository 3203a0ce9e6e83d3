"""Every command the README and docs/ show still runs: each fenced `v2idetr ...` line parses with the
CLI (its flags exist, its numbers are in range, its `key=value` overrides are config keys) and each
`make` line names a Makefile target."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from v2idetr.cli import build_parser
from v2idetr.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
VARIABLE = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)\}?")


def _expand(line: str, variables: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), line)


def _commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for each fenced line starting with `v2idetr` or `make`, continuation
    lines joined, `#` comments dropped and the shell variables the block sets (``D="..."``) expanded."""
    text = path.read_text()
    found = []
    for block in FENCE.finditer(text):
        first_line = text[: block.start(1)].count("\n") + 1
        variables: dict[str, str] = {}
        for offset, line in enumerate(block.group(1).replace("\\\n", " ").splitlines()):
            line = _expand(line, variables)
            words = shlex.split(line, comments=True) if line.lstrip().startswith(("v2idetr ", "make ")) or (
                ASSIGNMENT.match(line)) else []
            if words and all(ASSIGNMENT.match(w) for w in words):
                variables.update(w.split("=", 1) for w in words)
            elif words:
                found.append((first_line + offset, shlex.join(words)))
    return found


CASES = [pytest.param(cmd, id=f"{path.name}:{line}") for path in DOCS for line, cmd in _commands(path)]


def test_the_docs_show_commands() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("command", CASES)
def test_every_documented_command_is_accepted(command: str) -> None:
    words = shlex.split(command)
    if words[0] == "make":
        targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
        assert set(words[1:]) <= targets, command
        return
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(words[1:])
    except SystemExit as exc:  # argparse rejected a flag or a value
        pytest.fail(f"`{command}` is not accepted by the CLI (exit {exc.code})")
    overrides = [*getattr(args, "overrides", []), *rest]
    assert all("=" in o and not o.startswith("-") for o in overrides), f"`{command}`: unknown arguments {rest}"
    if overrides and words[1] not in ("bench",):  # bench rows may stand among its overrides
        load_config(None, overrides)  # every key exists and has the right type
