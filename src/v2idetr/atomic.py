"""Atomic file writes: readers see the old file or the new one, never half of one.

Everything the toolkit writes that a later step reads back (checkpoints, metrics, converted
annotations, reports) goes through here: write to a temporary file in the same folder, fsync,
``os.replace``, fsync the folder. A crash or a full disk mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# the names `temp_beside` gives: ".<name>.<12 hex digits><suffix>", suffix ".tmp" or ".tmp.<ext>"
_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9]+)?$")


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty file next to ``path`` (same file system, so ``os.replace`` is atomic).

    Created with ``os.open(..., 0o666)`` so the kernel applies the umask and the output gets the
    mode a plain ``open`` gives (``mkstemp`` would make checkpoints and reports owner-only).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file for {path.name}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the content, then move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    mode = tmp.stat().st_mode & 0o777
    try:
        write(tmp)
        if tmp.stat().st_mode & 0o777 != mode:  # a writer that recreates the file (safetensors: 0600)
            os.chmod(tmp, mode)
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


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files a writer killed mid-write (``kill -9``, power loss) left in
    ``folder`` (`temp_beside` names only, nothing else); the ones removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        if _TEMP_FILE.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) left by an interrupted write in %s", len(removed), folder)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (the file ``name`` in it) for the block, so processes that
    prepare the same folder (two seeds of one benchmark started side by side) take turns instead of
    writing the same files at once. Advisory (``flock``); where the OS has none, it does nothing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process per folder there
        yield
        return
    with open(folder / name, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
