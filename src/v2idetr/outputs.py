"""Output paths checked before the work starts: an hour of evaluation must not end in a traceback
because ``--out`` names a file where a folder goes (or a folder where a file goes)."""

from __future__ import annotations

from pathlib import Path

from v2idetr.errors import ConfigError


def _file_above(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is a file (nothing can be created under it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into (created later if missing), or ``ConfigError`` naming ``flag``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file; expected a folder (it is created if missing)")
    blocker = _file_above(path)
    if blocker is not None:
        raise ConfigError(f"{flag} {path}: {blocker} is a file, so no folder can be made under it")
    return path


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a file to write (replaced atomically if it exists), or ``ConfigError`` naming ``flag``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; expected a file name")
    blocker = _file_above(path)
    if blocker is not None:
        raise ConfigError(f"{flag} {path}: {blocker} is a file, so nothing can be written under it")
    return path
