"""A `v2idetr bench accuracy` folder: the settings its runs were made with, and what it may delete.

Finished runs in a folder are reused, never re-run, so a folder keeps the settings they were made
with and refuses others; ``--overwrite`` deletes only what a benchmark wrote there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from v2idetr.atomic import atomic_write_json
from v2idetr.errors import ConfigError

SETTINGS_FILE = "bench.json"
LOCK_FILE = ".bench.lock"  # `folder_lock`: held while a benchmark checks its settings and writes its data
# what a benchmark writes into its folder (--overwrite deletes these, nothing else)
BENCH_OUTPUTS = ("runs", "data", "data-test", "data-budget", SETTINGS_FILE, "results.json", "results.md")


def clear_benchmark(out: Path) -> None:
    """Delete an earlier benchmark's runs, data, settings and tables from ``out`` (``--overwrite``)."""
    for name in BENCH_OUTPUTS:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to add runs to a folder whose runs were made with other settings (data, schedule, size,
    overrides): they are reused or resumed, not re-run, so the table would compare unlike runs. Rows
    and seeds may be added. A folder without runs (say, the first try named a missing file) or
    without ``bench.json`` (made before this check) simply gets the given settings written."""
    path = out / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
    has_runs = any(f.name in ("last.ckpt", "test-metrics.json") for f in (out / "runs").glob("*/seed-*/*"))
    if not path.is_file() or not has_runs:
        atomic_write_json(path, settings, indent=2)
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable benchmark settings ({e}); expected the JSON this command writes") from e
    changed = [f"{key}: {before.get(key)!r} before, {settings.get(key)!r} now"
               for key in sorted(set(before) | set(settings)) if before.get(key) != settings.get(key)]
    if changed:
        raise ConfigError(f"{path}: this folder's runs were made with other settings ({'; '.join(changed)}); "
                          "its finished runs would be reused, not re-run: give another --out, the same settings "
                          "(rows and seeds may differ), or --overwrite to delete them first")
