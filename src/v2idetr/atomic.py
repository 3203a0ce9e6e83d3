"""Atomic file writes: readers see the old file or the new one, never half of one.

Everything the toolkit writes that a later step reads back (checkpoints, metrics, converted
annotations, reports) goes through here: write to a temporary file in the same folder, fsync,
``os.replace``, fsync the folder. A crash or a full disk mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty temporary file next to ``path`` (same file system, so ``os.replace`` is atomic).

    ``mkstemp`` creates it readable by its owner only; it gets the mode a plain ``open`` would
    give (0666 minus the umask) so checkpoints and reports stay readable by the team that shares
    the run folder.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
    finally:
        os.close(fd)
    return Path(name)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the content, then move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, doc: Any, indent: int | None = None) -> Path:
    """JSON (NaN refused: it is not JSON and other tools choke on it)."""
    return atomic_write_text(path, json.dumps(doc, indent=indent, allow_nan=False) + "\n")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
