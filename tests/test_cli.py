"""The `v2idetr` command line: subcommands wired, errors are one clear line with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from v2idetr.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("data", "synth", "train", "distill", "eval", "demo"):
        assert name in out


def test_unknown_config_key_is_a_clear_error(tiny_synth, tmp_path: Path, capsys) -> None:
    code = main(["train", "--config", str(ROOT / "configs" / "student-tiny.yaml"), f"data.train={tiny_synth.train_json}",
                 "train.stepz=3", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.stepz" in err and "Traceback" not in err


def test_missing_training_data_is_named(tmp_path: Path, capsys) -> None:
    code = main(["train", "--config", str(ROOT / "configs" / "student-tiny.yaml"), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "data.train" in capsys.readouterr().err


def test_train_then_eval_through_the_cli(tiny_synth, tiny_model, tmp_path: Path, capsys, monkeypatch) -> None:
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    out = tmp_path / "run"
    code = main(["train", "--config", str(ROOT / "configs" / "student-tiny.yaml"), f"data.train={tiny_synth.train_json}",
                 f"data.val={tiny_synth.val_json}", "train.steps=2", "train.eval_every=0", *tiny_model,
                 "--out", str(out), "--no-progress"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    threads.clear()
    code = main(["eval", "--checkpoint", str(out / "best.ckpt"), "--data", str(tiny_synth.val_json), "--out",
                 str(tmp_path / "ev"), "--protocol", "strict", "--threads", "1", "--no-progress"])
    assert code == 0
    assert threads == [1]  # side-by-side jobs: --threads reaches PyTorch before the work
    printed = capsys.readouterr().out
    assert "strict" in printed and "AP50" in printed
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["protocol"] == "strict"
    assert all(saved[k] is None or 0.0 <= saved[k] <= 1.0 for k in ("AP", "AP50", "AP75", "precision", "recall", "f1"))


@pytest.mark.parametrize("command", [["eval", "--checkpoint", "c.ckpt", "--data", "d.json"],
                                     ["predict", "video.mp4", "--checkpoint", "c.ckpt", "--out", "o"],
                                     ["bench", "speed", "--config", "c.yaml"], ["bench", "accuracy", "--out", "o"]])
def test_every_inference_and_bench_command_takes_threads(command: list[str]) -> None:
    assert build_parser().parse_args([*command, "--threads", "1"]).threads == 1
    assert build_parser().parse_args(command).threads == 0


def test_eval_of_a_corrupt_checkpoint_is_a_clear_error(tiny_synth, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 64)
    code = main(["eval", "--checkpoint", str(bad), "--data", str(tiny_synth.val_json)])
    assert code == 2
    assert "bad.ckpt" in capsys.readouterr().err


def test_eval_shows_a_teacher_less_than_its_clip(tiny_synth, teacher_ckpt: Path, tiny_checkpoint: Path, tmp_path: Path,
                                                 capsys) -> None:
    for view in ("static", "key-frame"):  # tests/models/test_teacher.py: what each view runs
        code = main(["eval", "--checkpoint", str(teacher_ckpt), "--data", str(tiny_synth.val_json), "--teacher-view",
                     view, "--out", str(tmp_path / view), "--no-progress"])
        assert code == 0
        saved = json.loads((tmp_path / view / "metrics.json").read_text())
        assert saved["name"] == f"{teacher_ckpt.stem} ({view} view)" and saved["num_frames"] > 0
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_synth.val_json), "--teacher-view",
                 "static"])
    assert code == 2
    err = capsys.readouterr().err
    assert "video teacher" in err and str(tiny_checkpoint) in err
