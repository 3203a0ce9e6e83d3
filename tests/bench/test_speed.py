"""`bench speed`: every model and backend timed, ratios printed, JSON written; compile is correct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from v2idetr.bench.speed import benchmark_speed, speed_inputs, teacher_config
from v2idetr.bench.train_speed import _objective
from v2idetr.cli import main
from v2idetr.config import load_config
from v2idetr.demo import QUICK_MODEL
from v2idetr.errors import ConfigError
from v2idetr.models.build import build, build_model
from v2idetr.models.teacher import VideoTeacher, repeated_frames

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "student-tiny.yaml")


def test_bench_speed_cli_prints_table_ratios_and_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "speed.json"
    args = ["bench", "speed", "--config", TINY, "--size", "64", "--batch", "1", "2", "--backends", "eager", "onnx",
            "--iters", "2", "--warmup", "1", "--rounds", "2", "--out", str(out), *QUICK_MODEL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "student/baseline latency, batch 1:" in printed and "teacher/student latency, batch 2:" in printed
    result = json.loads(out.read_text())
    rows = {(r["model"], r["backend"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {(m, "eager", b) for m in ("baseline", "student", "teacher") for b in (1, 2)} | {
        ("student", "onnx", 1), ("student", "onnx", 2)}
    for row in rows.values():
        assert row["error"] is None and row["fps"] > 0 and row["latency_ms_p95"] >= row["latency_ms_p50"] > 0
    assert rows[("student", "onnx", 1)]["note"] == "CPUExecutionProvider"
    student, teacher = rows[("student", "eager", 1)], rows[("teacher", "eager", 1)]
    assert teacher["frames_in"] == 3 and student["frames_in"] == 1
    assert teacher["params_m"] > student["params_m"] == rows[("baseline", "eager", 1)]["params_m"]
    assert teacher["gflops"] > 2 * student["gflops"] > 0  # the backbone runs on 3 frames
    assert result["ratios"]["student/baseline latency, batch 1"] == pytest.approx(
        student["latency_ms_p50"] / rows[("baseline", "eager", 1)]["latency_ms_p50"], rel=1e-2)


def test_teacher_is_the_student_plus_msi() -> None:
    student = load_config(TINY, list(QUICK_MODEL))
    teacher = teacher_config(student, 5, None)
    assert teacher.model.temporal == "msi" and teacher.data.num_frames == 5
    assert teacher.model.hidden_dim == student.model.hidden_dim and student.model.temporal == "none"
    assert isinstance(build_model(teacher, 1), VideoTeacher)


def test_rows_a_cpu_cannot_run_are_reported_not_fatal() -> None:
    """CUDA graphs and half precision on a CPU: error rows naming why; the rest is timed."""
    result = benchmark_speed(TINY, list(QUICK_MODEL), size=64, batches=(1,), backends=("eager", "graph"),
                             precisions=("fp32", "bf16"), iters=1, warmup=0, rounds=1)
    rows = {(r["model"], r["backend"], r["precision"]): r for r in result["rows"]}
    assert rows[("student", "eager", "fp32")]["error"] is None and rows[("student", "eager", "fp32")]["fps"] > 0
    assert "needs a CUDA device" in rows[("student", "graph", "fp32")]["error"]
    assert "precision bf16 needs a CUDA device" in rows[("student", "eager", "bf16")]["error"]
    assert "precision bf16" in rows[("teacher", "eager", "bf16")]["error"]
    assert result["best_student_batch1"]["precision"] == "fp32"


def test_bad_bench_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="backends"):
        benchmark_speed(TINY, list(QUICK_MODEL), size=64, backends=("onnx",))
    with pytest.raises(ConfigError, match="teacher-config"):
        benchmark_speed(str(ROOT / "configs" / "teacher-tiny.yaml"), list(QUICK_MODEL), size=64)


def test_bench_speed_train_times_each_stage(tmp_path: Path, capsys) -> None:
    out = tmp_path / "train.json"
    args = ["bench", "speed", "--config", TINY, "--train", "--size", "64", "--batch", "2", "--iters", "1",
            "--warmup", "1", "--out", str(out), *QUICK_MODEL, "train.activation_checkpointing=true"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "steps/s" in printed and "distill" in printed
    rows = json.loads(out.read_text())["train_rows"]
    assert [r["stage"] for r in rows] == ["baseline", "teacher", "distill"]
    for row in rows:
        assert row["error"] is None and row["steps_per_s"] > 0 and row["frames_per_s"] == pytest.approx(
            2 * row["steps_per_s"], rel=1e-2)
        assert row["activation_checkpointing"] is True and "peak_memory_mb" not in row  # no CUDA here
    assert rows[1]["frames_in"] == 3 and rows[0]["frames_in"] == 1


def test_teacher_batches_are_clips_of_consecutive_key_frames() -> None:
    """As eval and predict batch them: 4 clips of 3 frames share frames (6 distinct); batch 1 has none."""
    import torch

    images, sizes, _ = speed_inputs(4, 3, 32, torch.device("cpu"))
    assert images.shape == (4, 3, 3, 32, 32) and sizes.shape == (4, 2)
    first, _ = repeated_frames(images.flatten(0, 1), torch.zeros(12, 32, 32, dtype=torch.bool))
    assert len(first) == 6
    assert repeated_frames(speed_inputs(1, 3, 32, torch.device("cpu"))[0][0], torch.zeros(3, 32, 32, dtype=torch.bool)) is None


@pytest.mark.parametrize("overrides", [[], ["model.freeze_backbone=true"]])
def test_train_step_trains_the_parameters_the_configured_weights_would(overrides) -> None:
    """Random weights are timed, but a pretrained trunk's frozen stem (or a frozen trunk) must stay
    frozen, or the step's backward pass, and so its cost, is overstated."""
    lite = str(ROOT / "configs" / "student-lite.yaml")
    cfg, teacher_cfg = load_config(lite, overrides), load_config(lite.replace("student", "teacher"), overrides)
    for stage, real_cfg in (("baseline", cfg), ("teacher", teacher_cfg)):
        _, model, _ = _objective(stage, cfg, teacher_cfg, 2, torch.device("cpu"))
        real = build(real_cfg, 2).model  # the package's ImageNet file: no download
        assert cfg.model.backbone_weights == "imagenet"
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trained == {n for n, p in real.named_parameters() if p.requires_grad}
        assert any("backbone.body" in n for n in trained) != bool(overrides)
