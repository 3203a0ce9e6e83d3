"""Every error a user can cause ends in one line naming what and where, never a traceback; SIGTERM is
handled as Ctrl-C is (clean-up, no partial output, the signal's exit status)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from v2idetr.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "student-tiny.yaml")


def _bad_invocations(tiny_synth, ckpt: Path, tmp_path: Path) -> list[tuple[list[str], str]]:
    """(arguments, a phrase the error must contain)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    folder = tmp_path / "a-folder"
    folder.mkdir(exist_ok=True)
    data = ["--config", TINY, f"data.train={tiny_synth.train_json}", "train.steps=1"]
    return [
        (["train", *data, "--out", str(a_file)], "is a file"),
        (["train", *data, "--out", str(a_file / "sub")], "is a file"),
        (["train", *data, "--out", str(tmp_path / "r1"), "data.batch_size=0"], "'data.batch_size' = 0"),
        (["train", *data, "--out", str(tmp_path / "r2"), "train.lr=-1"], "'train.lr' = -1.0"),
        (["train", *data, "--out", str(tmp_path / "r3"), "train.eval_every=-3"], "'train.eval_every' = -3"),
        (["train", *data, "--out", str(tmp_path / "r5"), "model.freeze_backbone=true"], "'model.freeze_backbone'"),
        (["distill", "--teacher", str(a_file), *data, "--out", str(tmp_path / "r4")], "a-file"),
        (["eval", "--checkpoint", str(ckpt), "--data", str(tiny_synth.val_json), "--out", str(a_file)], "is a file"),
        (["eval", "--checkpoint", str(ckpt), "--data", str(tiny_synth.val_json), "--batch-size", "0"], "--batch-size"),
        (["predict", "--checkpoint", str(ckpt), str(tiny_synth.val_json), "--out", str(a_file)],
         "is a file"),
        (["predict", "--checkpoint", str(ckpt), str(tiny_synth.val_json), "--out", str(folder),
          "--batch-size", "0"], "--batch-size"),
        (["predict", "--checkpoint", str(ckpt), str(tiny_synth.val_json), "--out", str(folder),
          "--fps", "0"], "--fps"),
        (["predict", "--checkpoint", str(ckpt), str(tmp_path / "missing.mp4"), "--out", str(folder)],
         "missing.mp4"),
        (["export", "--checkpoint", str(ckpt), "--out", str(folder)], "is a folder"),
        (["export", "--checkpoint", str(ckpt), "--size", "0"], "--size"),
        (["data", "convert", str(tiny_synth.train_json), "--out", str(folder)], "is a folder"),
        (["data", "stats", str(tmp_path / "nothing-here")], "nothing-here"),
        (["synth", "--out", str(a_file)], "is a file"),
        (["synth", "--out", str(tmp_path / "s"), "--videos", "0"], "--videos"),
        (["bench", "accuracy", "--out", str(tmp_path / "b"), "--steps", "0"], "--steps"),
        (["bench", "speed", "--config", TINY, "--batch", "0"], "--batch"),
        (["demo", "--out", str(a_file)], "is a file"),
    ]


def test_bad_arguments_end_in_one_named_error_not_a_traceback(tiny_synth, tiny_checkpoint, tmp_path, capsys) -> None:
    for args, phrase in _bad_invocations(tiny_synth, tiny_checkpoint, tmp_path):
        try:
            code = main([*args, *(["--no-progress"] if args[0] in ("train", "distill", "eval") else [])])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        out = capsys.readouterr()
        text = out.out + out.err
        assert code == 2, (args, text)
        assert "Traceback" not in text and phrase in text, (args, text)


def test_sigterm_to_predict_leaves_no_partial_output(tiny_checkpoint, tmp_path: Path, write_video) -> None:
    video = write_video(tmp_path / "long.mp4", frames=1500, size=(64, 64), fps=25)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "v2idetr", "predict", "--checkpoint", str(tiny_checkpoint), str(video),
           "--out", str(out), "--no-progress", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob(".*.tmp.mp4")):
        time.sleep(0.05)
    assert proc.poll() is None, "predict ended before the signal"
    time.sleep(0.5)  # well into the video
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err and "Traceback" not in err
    assert not [p.name for p in out.iterdir() if p.is_file()], "a partial output was left"


@pytest.mark.parametrize("command", [["synth", "--videos", "400", "--frames", "48", "--size", "96"]])
def test_sigterm_to_synth_exits_with_the_signals_status(tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "v2idetr", *command, "--out", str(out), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not (out / "frames").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert not (out / "train.json").exists() and not (out / "frames").exists()  # nothing half-written
