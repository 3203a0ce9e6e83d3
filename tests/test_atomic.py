import json
import os
import stat
import threading
from pathlib import Path

import pytest

from v2idetr.atomic import atomic_write, atomic_write_json, atomic_write_text, folder_lock


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_refuses_nan(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "a.json", {"x": float("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path: Path, umask: int) -> None:
    """mkstemp's temporary files are owner-only; outputs shared in a team's run folder must not be."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from v2idetr.deploy.video import VideoWriter

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
        # safetensors recreates the file it writes owner-only (checkpoints are written so)
        atomic_write(tmp_path / "last.ckpt", lambda tmp: save_file({"w": torch.zeros(2)}, str(tmp)))
        writer = VideoWriter(tmp_path / "clip.mp4", fps=5)
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8))
        writer.close()
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for name in ("report.md", "last.ckpt", "clip.mp4", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_stale_temp_files_of_killed_writers_are_removed_and_nothing_else(tmp_path: Path) -> None:
    from v2idetr.atomic import remove_stale_temps, temp_beside

    stale = [temp_beside(tmp_path / "last.ckpt"), temp_beside(tmp_path / "clip.mp4", suffix=".tmp.mp4")]
    kept = [tmp_path / ".notes.tmp", tmp_path / "data.tmp", tmp_path / ".last.ckpt.xyz.tmp"]
    for path in kept:
        path.write_text("mine")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


def test_folder_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    pytest.importorskip("fcntl")
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with folder_lock(tmp_path / "bench"):
            order.append("first in")
            holding.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        holding.wait(10)
        with folder_lock(tmp_path / "bench"):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    holding.wait(10)
    threads[1].join(0.3)  # the second holder must still be waiting
    assert order == ["first in"] and threads[1].is_alive()
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first in", "first out", "second in"]
