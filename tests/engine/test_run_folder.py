"""A run folder belongs to one run: refusal without --resume/--overwrite, resuming only the run's own
usable checkpoints, no truncated log when none is usable, model-config checks, stale temp files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from v2idetr import api
from v2idetr.cli import main
from v2idetr.config import load_config
from v2idetr.demo import QUICK_MODEL
from v2idetr.engine.checkpoint import (
    load_checkpoint,
    prune_step_checkpoints,
    read_meta,
    save_checkpoint,
    step_checkpoint_files,
)
from v2idetr.errors import CheckpointError, ConfigError, DatasetError

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "student-tiny.yaml")


def _overrides(synth, *extra: str) -> list[str]:
    return [*QUICK_MODEL, "train.threads=1", "train.log_every=1", f"data.train={synth.train_json}",
            "train.eval_every=2", "train.keep_last=2", *extra]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture()
def finished(tiny_synth, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    api.train(TINY, _overrides(tiny_synth, "train.steps=4"), out, progress=False)
    return out


def test_a_finished_run_is_refused_without_resume_or_overwrite(finished: Path, tiny_synth, capsys) -> None:
    before = _snapshot(finished)
    with pytest.raises(ConfigError, match=r"holds run \d{8}-\d{6}-[0-9a-f]{6} of 4 steps .*--resume.*--overwrite"):
        api.train(TINY, _overrides(tiny_synth, "train.steps=2"), finished, progress=False)
    assert main(["train", "--config", TINY, "--out", str(finished), "--no-progress",
                 *_overrides(tiny_synth, "train.steps=2")]) == 2
    err = capsys.readouterr().err
    assert "holds run" in err and "Traceback" not in err
    assert _snapshot(finished) == before  # nothing touched
    # a run's config.json (a config plus its run id) still serves as a --config
    assert load_config(finished / "config.json").train.steps == 4


def test_overwrite_deletes_the_old_run_first(finished: Path, tiny_synth) -> None:
    old_id = json.loads((finished / "config.json").read_text())["run_id"]
    (finished / "notes.txt").write_text("mine")
    before = _snapshot(finished)
    with pytest.raises(DatasetError):  # a mistake found before training starts leaves the old run intact
        api.train(TINY, _overrides(tiny_synth, "data.train=missing.json"), finished, progress=False, overwrite=True)
    assert _snapshot(finished) == before
    api.train(TINY, _overrides(tiny_synth, "train.steps=2"), finished, progress=False, overwrite=True)
    new_id = json.loads((finished / "config.json").read_text())["run_id"]
    assert new_id != old_id and (finished / "notes.txt").read_text() == "mine"
    assert [p.name for p in step_checkpoint_files(finished)] == ["ckpt-00000002.ckpt"]  # the old ckpt-4 is gone
    assert {read_meta(p)["run_id"] for p in [finished / "last.ckpt", finished / "best.ckpt"]} == {new_id}
    lines = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in lines) == 2
    with pytest.raises(ConfigError, match="give one"):
        api.train(TINY, _overrides(tiny_synth), finished, progress=False, resume=True, overwrite=True)


def test_resume_takes_only_the_runs_own_checkpoints(finished: Path, tiny_synth, tmp_path: Path) -> None:
    other = tmp_path / "other"
    api.train(TINY, _overrides(tiny_synth, "train.steps=6"), other, progress=False)
    # another run's newer checkpoint lands in the folder (a copy, a mix-up): never resumed from ...
    shutil.copy(other / "ckpt-00000006.ckpt", finished / "ckpt-00000040.ckpt")
    result = api.train(TINY, _overrides(tiny_synth, "train.steps=8"), finished, progress=False, resume=True)
    own = json.loads((finished / "config.json").read_text())["run_id"]
    assert result.step == 8 and load_checkpoint(finished / "last.ckpt").meta["run_id"] == own
    lines = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines if e["type"] == "train"] == list(range(1, 9))  # 1-4, then 5-8 from step 4
    # ... and never counts when pruning: the run keeps its own two newest (the foreign file is left alone)
    names = [p.name for p in step_checkpoint_files(finished)]
    assert names == ["ckpt-00000040.ckpt", "ckpt-00000008.ckpt", "ckpt-00000006.ckpt"]
    assert read_meta(finished / "ckpt-00000008.ckpt")["run_id"] == own


def test_pruning_counts_only_complete_checkpoints_of_the_run(finished: Path) -> None:
    last = load_checkpoint(finished / "last.ckpt")
    usable = step_checkpoint_files(finished)
    assert len(usable) == 2
    data = (finished / "last.ckpt").read_bytes()
    (finished / "ckpt-00000090.ckpt").write_bytes(data[: len(data) // 2])  # newer, truncated
    save_checkpoint(finished / "ckpt-00000091.ckpt", last.model, {**last.meta, "run_id": "another-run"},
                    optimizer_state=last.optimizer)  # newer, another run's
    prune_step_checkpoints(finished, keep=2, run_id=last.meta["run_id"])
    assert all(p.exists() for p in [*usable, finished / "ckpt-00000090.ckpt", finished / "ckpt-00000091.ckpt"])
    prune_step_checkpoints(finished, keep=1, run_id=last.meta["run_id"])  # the run's own older one goes
    assert [p.exists() for p in usable] == [True, False]


def test_resume_with_only_unusable_checkpoints_stops_and_keeps_the_log(finished: Path, tiny_synth) -> None:
    for path in [finished / "last.ckpt", *step_checkpoint_files(finished)]:
        path.write_bytes(path.read_bytes()[:1000])
    log_before = (finished / "metrics.jsonl").read_bytes()
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*last\.ckpt, ckpt-00000004\.ckpt"):
        api.train(TINY, _overrides(tiny_synth, "train.steps=6"), finished, progress=False, resume=True)
    assert (finished / "metrics.jsonl").read_bytes() == log_before


def test_resume_with_another_model_config_lists_the_keys(finished: Path, tiny_synth) -> None:
    with pytest.raises(ConfigError, match=r"model\.hidden_dim: 32 there, 64 now"):
        api.train(TINY, _overrides(tiny_synth, "train.steps=6", "model.hidden_dim=64"), finished, progress=False,
                  resume=True)


def test_stale_temp_files_go_and_out_must_be_a_folder(finished: Path, tiny_synth, tmp_path: Path) -> None:
    stale = [finished / ".last.ckpt.0123456789ab.tmp", finished / ".metrics.jsonl.abcdefabcdef.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    keep = finished / ".mine.tmp"
    keep.write_text("not ours")
    api.train(TINY, _overrides(tiny_synth, "train.steps=5"), finished, progress=False, resume=True)
    assert not any(p.exists() for p in stale) and keep.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        api.train(TINY, _overrides(tiny_synth), a_file, progress=False)


def test_a_frame_that_fails_late_keeps_the_steps_done(tiny_synth, tmp_path: Path, monkeypatch) -> None:
    """A frame that cannot be read at step 3 stops the run after saving it; --resume goes on from there."""
    from v2idetr.data import clips
    from v2idetr.data.io import FrameReadError, read_frame

    calls = {"n": 0}

    def failing_late(frame):
        calls["n"] += 1
        if calls["n"] > 3 * 8:  # three batches of 8 frames read, then one cannot be
            raise FrameReadError(frame, "truncated (simulated)")
        return read_frame(frame)

    monkeypatch.setattr(clips, "read_frame", failing_late)
    out = tmp_path / "run"
    overrides = _overrides(tiny_synth, "train.steps=6", "train.eval_every=0", "data.batch_size=8")
    with pytest.raises(DatasetError, match="truncated"):
        api.train(TINY, overrides, out, progress=False)
    assert load_checkpoint(out / "last.ckpt").meta["step"] == 3
    monkeypatch.undo()
    assert api.train(TINY, overrides, out, progress=False, resume=True).step == 6
