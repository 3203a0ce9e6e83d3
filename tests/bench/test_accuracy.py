"""`bench accuracy`: every row trained with one schedule, numbers on test, resumable, tables written."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from v2idetr.bench.accuracy import SIZES, benchmark_accuracy
from v2idetr.bench.folder import LOCK_FILE, check_settings, clear_benchmark
from v2idetr.bench.rows import ROWS, default_rows
from v2idetr.bench.schedule import Schedule, continued_schedule
from v2idetr.cli import main
from v2idetr.config import DistillConfig, load_config, shipped_configs
from v2idetr.demo import QUICK_MODEL
from v2idetr.engine.checkpoint import load_checkpoint
from v2idetr.errors import ConfigError

QUICK = [*QUICK_MODEL, "train.threads=1", "model.msi_points=2", "train.eval_every=0"]


def test_rows_run_once_and_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "acc"
    args = ["bench", "accuracy", "--out", str(out), "--rows", "baseline", "student", "--seeds", "0", "--steps",
            "2", "--videos", "4", "--frames", "6", "--frame-size", "64", "--no-progress", *QUICK]
    assert main(args) == 0
    table = (out / "results.md").read_text()
    assert "| baseline |" in table and "| student |" in table and "test split" in table
    result = json.loads((out / "results.json").read_text())
    assert {r["row"] for r in result["runs"]} == {"baseline", "student"}
    # the student needs the same seed's teacher: it was trained (and kept) on the way
    assert (out / "runs" / "teacher" / "seed-0" / "best.ckpt").is_file()
    first = (out / "runs" / "baseline" / "seed-0" / "test-metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args[:5], "baseline", "student", "student-cqd", "baseline-2x", *args[7:]]) == 0
    assert (out / "runs" / "baseline" / "seed-0" / "test-metrics.json").stat().st_mtime_ns == first
    assert (out / "runs" / "student-cqd" / "seed-0" / "test-metrics.json").is_file()
    cqd = json.loads((out / "runs" / "student-cqd" / "seed-0" / "best.ckpt").with_name("config.json").read_text())
    assert cqd["distill"]["tfd"] == 0.0 and cqd["train"]["steps"] == 2
    assert cqd["distill"]["cqd"] == DistillConfig().cqd > 0  # the default weight: only TFD is switched off
    longer = json.loads((out / "runs" / "baseline-2x" / "seed-0" / "config.json").read_text())
    assert longer["train"]["steps"] == 4 and longer["model"] == json.loads(
        (out / "runs" / "baseline" / "seed-0" / "config.json").read_text())["model"]
    assert "| baseline-2x |" in (out / "results.md").read_text()
    # a record from a version that measured fewer metrics: the same checkpoint is evaluated again
    record_file = out / "runs" / "baseline" / "seed-0" / "test-metrics.json"
    old = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({k: v for k, v in old.items() if k != "AP50_degraded_one_frame"}))
    weights = (out / "runs" / "baseline" / "seed-0" / "last.ckpt").stat().st_mtime_ns
    assert main([*args[:5], "baseline", *args[7:]]) == 0
    assert json.loads(record_file.read_text()) == old
    assert (out / "runs" / "baseline" / "seed-0" / "last.ckpt").stat().st_mtime_ns == weights  # not retrained
    # the folder keeps its settings: another schedule or test split would be compared with these runs
    assert args[9:11] == ["--steps", "2"]
    for changed, key in (([*args[:10], "3", *args[11:]], "schedule"), ([*args, "--test-videos", "5"], "test_videos"),
                         ([*args, "train.lr=1e-3"], "overrides")):
        capsys.readouterr()
        assert main(changed) == 2
        err = capsys.readouterr().err
        assert "bench.json" in err and key in err and "another --out" in err
    assert json.loads(record_file.read_text()) == old


def test_view_rows_evaluate_the_teacher_without_training(tmp_path: Path) -> None:
    out = tmp_path / "acc"
    args = ["bench", "accuracy", "--out", str(out), "--rows", "teacher-static", "teacher-key-frame", "--seeds", "0",
            "--steps", "2", "--videos", "4", "--frames", "6", "--frame-size", "64", "--no-progress", *QUICK]
    assert main(args) == 0
    teacher = out / "runs" / "teacher" / "seed-0"
    assert (teacher / "best.ckpt").is_file()  # trained on the way, as a student's teacher is
    for row, view in (("teacher-static", "static"), ("teacher-key-frame", "key-frame")):
        run = out / "runs" / row / "seed-0"
        assert not list(run.glob("*.ckpt"))  # nothing trained: the teacher's checkpoint, shown less
        assert json.loads((run / "test" / "metrics.json").read_text())["name"] == f"best ({view} view)"
        assert json.loads((run / "test-metrics.json").read_text())["minutes"] == 0.0
    assert "| teacher-static |" in (out / "results.md").read_text()


def test_lineage_runs_the_baseline_then_the_teacher_from_it(tmp_path: Path) -> None:
    out = tmp_path / "acc"
    args = ["bench", "accuracy", "--out", str(out), "--rows", "student", "student-from-baseline", "--seeds", "0",
            "--steps", "3",
            "--teacher-steps", "1", "--student-steps", "1", "--videos", "4", "--frames", "6", "--frame-size", "64",
            "--no-progress", *QUICK]
    assert main(args) == 0
    runs = out / "runs"
    teacher = json.loads((runs / "teacher" / "seed-0" / "config.json").read_text())["train"]
    assert teacher["init_from"] == str(runs / "baseline" / "seed-0" / "ckpt-00000001.ckpt") and teacher["steps"] == 1
    assert (runs / "baseline" / "seed-0" / "ckpt-00000001.ckpt").is_file()
    assert json.loads((runs / "baseline" / "seed-0" / "config.json").read_text())["train"]["steps"] == 3
    assert json.loads((runs / "student" / "seed-0" / "config.json").read_text())["train"]["steps"] == 1
    # student-from-baseline starts where the baseline's last student-steps begin: the baseline keeps that
    # checkpoint (step 2) though it validates only at steps 1 and 3
    late = json.loads((runs / "student-from-baseline" / "seed-0" / "config.json").read_text())
    assert late["train"]["init_from"] == str(runs / "baseline" / "seed-0" / "ckpt-00000002.ckpt")
    assert late["train"]["steps"] == 1 and late["distill"]["init_from_teacher"] is False
    assert (runs / "baseline" / "seed-0" / "ckpt-00000002.ckpt").is_file()
    assert "one lineage" in (out / "results.md").read_text()
    # a baseline trained before it kept that checkpoint is named, not silently replaced by another start
    (runs / "baseline" / "seed-0" / "ckpt-00000002.ckpt").unlink()
    shutil.rmtree(runs / "student-from-baseline")
    assert main(args) == 2


def test_overrides_after_rows_are_overrides_not_rows(monkeypatch, tmp_path: Path) -> None:
    seen: dict = {}

    def fake(out, **kwargs):
        seen.update(kwargs)
        return {"rows": {}, "header": "# t", "paired": []}

    monkeypatch.setattr("v2idetr.bench.accuracy.benchmark_accuracy", fake)
    assert main(["bench", "accuracy", "train.lr=1e-3", "--out", str(tmp_path), "--rows", "baseline", "teacher",
                 "data.batch_size=4"]) == 0
    assert seen["rows"] == ["baseline", "teacher"]
    assert seen["overrides"] == ["train.lr=1e-3", "data.batch_size=4"]
    assert seen["distill_steps"] is None
    assert main(["bench", "accuracy", "--out", str(tmp_path), "--distill-steps", "48"]) == 0
    assert seen["distill_steps"] == 48 and seen["compare"] == []
    assert main(["bench", "accuracy", "--out", str(tmp_path), "--rows", "student", "baseline", "--compare",
                 "student:baseline", "data.batch_size=4"]) == 0
    assert seen["compare"] == [("student", "baseline")] and seen["overrides"] == ["data.batch_size=4"]
    assert main(["bench", "accuracy", "--out", str(tmp_path), "--compare", "student-baseline"]) == 2


def test_label_budget_rows(tmp_path: Path) -> None:
    """--label-every K: rows train on 1 frame in K labelled, the -all-labels rows on every label; the
    image-teacher row learns from the baseline but starts where student-unlabelled starts."""
    out = tmp_path / "acc"
    rows = ["baseline-all-labels", "student-all-labels", "student-unlabelled", "student-unlabelled-image-teacher",
            "student-unlabelled-static-teacher"]
    args = ["bench", "accuracy", "--out", str(out), "--rows", *rows, "--seeds", "0", "--steps", "2",
            "--label-every", "3", "--videos", "4", "--frames", "6", "--frame-size", "64", "--no-progress", *QUICK]
    assert main(args) == 0
    runs = out / "runs"

    def config(row: str) -> dict:
        return json.loads((runs / row / "seed-0" / "config.json").read_text())

    budget = config("baseline")["data"]["train"]
    assert budget.endswith("train-label-every-3.json") and config("baseline-all-labels")["data"]["train"].endswith(
        "data/train.json")
    doc = json.loads(Path(budget).read_text())
    assert sum(im.get("labelled", True) for im in doc["images"]) * 3 == len(doc["images"])
    assert config("teacher")["data"]["train"] == budget == config("student-unlabelled")["data"]["train"]
    oracle = config("student-all-labels")  # the teacher's student on every label: the budget's ceiling
    assert oracle["data"]["train"] == config("baseline-all-labels")["data"]["train"]
    assert oracle["distill"]["tfd"] == oracle["distill"]["cqd"] == 0.0 and oracle["distill"]["init_from_teacher"]
    image = config("student-unlabelled-image-teacher")
    assert image["distill"]["unlabelled"] == 0.5 and not image["distill"]["init_from_teacher"]
    assert image["train"]["init_from"].endswith("runs/teacher/seed-0/best.ckpt")
    meta = load_checkpoint(runs / "student-unlabelled-image-teacher" / "seed-0" / "best.ckpt").meta
    assert meta["distilled_from"].endswith("runs/baseline/seed-0/best.ckpt")
    assert config("student-unlabelled-static-teacher")["distill"]["teacher_view"] == "static"
    table = (out / "results.md").read_text()
    assert "label budget: 1 training frame in 3" in table and "of all-labels AP50" in table
    assert "of_all_labels_AP50" in json.loads((out / "results.json").read_text())["rows"]["student-unlabelled"]
    assert main([*args[:-len(QUICK)], "--label-every", "4", *QUICK]) == 2  # the folder keeps its budget


def test_archive_rows(tmp_path: Path) -> None:
    """--unlabelled-videos N: an archive from other generator seeds; the archive rows distil on it (the
    image-teacher one from the baseline, starting where student-archive starts); the others never see it."""
    out = tmp_path / "acc"
    args = ["bench", "accuracy", "--out", str(out), "--seeds", "0", "--steps", "2", "--unlabelled-videos", "2",
            "--videos", "4", "--frames", "6", "--frame-size", "64", "--no-progress"]
    rows = ["student-archive", "student-archive-image-teacher"]
    assert main([*args, "--rows", *rows, *QUICK]) == 0
    runs = out / "runs"

    def config(row: str) -> dict:
        return json.loads((runs / row / "seed-0" / "config.json").read_text())

    archive = out / "data" / "unlabelled.json"
    doc = json.loads(archive.read_text())
    assert len(doc["videos"]) == 2 and not doc["annotations"] and doc["info"]["seed"] == 2000
    for row in rows:
        assert config(row)["data"]["unlabelled"] == [str(archive)] and config(row)["distill"]["unlabelled"] == 0.5
    assert config("baseline")["data"]["unlabelled"] == config("teacher")["data"]["unlabelled"] == []
    image = config("student-archive-image-teacher")
    assert image["train"]["init_from"].endswith("runs/teacher/seed-0/best.ckpt")
    assert load_checkpoint(runs / rows[1] / "seed-0" / "best.ckpt").meta["distilled_from"].endswith(
        "runs/baseline/seed-0/best.ckpt")
    table = (out / "results.md").read_text()
    assert "archive: 2 other videos nobody labelled" in table
    # a row and its image-teacher control are paired without being asked
    assert "| student-archive - student-archive-image-teacher | " in table
    assert json.loads((out / "results.json").read_text())["paired"][0]["control"] == rows[1]
    with pytest.raises(ConfigError, match="--compare student:baseline: both rows of a pair must be among --rows"):
        benchmark_accuracy(tmp_path / "none", rows=["student-archive"], compare=[("student", "baseline")])
    with pytest.raises(ConfigError, match="archive of unlabelled videos"):
        benchmark_accuracy(tmp_path / "none", rows=["student-archive"], steps=2)
    assert "student-archive" not in default_rows() and set(rows) <= set(default_rows(archive=True))


def test_pseudo_label_rows(tmp_path: Path) -> None:
    """The pseudo-label rows train (detection loss only) on the budget file with their teacher's detections
    as labels, written beside the run: the video teacher's, or the image baseline's from the same start."""
    out = tmp_path / "acc"
    rows = ["student-pseudo-labels", "student-pseudo-labels-image-teacher"]
    assert main(["bench", "accuracy", "--out", str(out), "--rows", *rows, "--seeds", "0", "--steps", "2",
                 "--label-every", "3", "--videos", "4", "--frames", "6", "--frame-size", "64", "--no-progress",
                 *QUICK]) == 0
    runs = out / "runs"
    for row in rows:
        cfg = json.loads((runs / row / "seed-0" / "config.json").read_text())
        labels = runs / row / "seed-0-pseudo-labels.json"
        assert cfg["data"]["train"] == str(labels) and (cfg["distill"]["tfd"], cfg["distill"]["cqd"]) == (0.0, 0.0)
        doc = json.loads(labels.read_text())
        budget = json.loads((out / "data-budget" / "train-label-every-3.json").read_text())
        human = {im["id"] for im in budget["images"] if im.get("labelled", True)}
        assert {im["id"] for im in doc["images"] if not im.get("pseudo_labelled") and im.get("labelled", True)} == human
        assert doc["pseudo_labels"]["source"] == str(runs / ROWS[row].teacher / "seed-0" / "best.ckpt")
    image = json.loads((runs / rows[1] / "seed-0" / "config.json").read_text())
    assert image["train"]["init_from"].endswith("runs/teacher/seed-0/best.ckpt")
    assert load_checkpoint(runs / rows[1] / "seed-0" / "best.ckpt").meta["distilled_from"].endswith(
        "runs/baseline/seed-0/best.ckpt")


def test_archive_pseudo_label_rows(tmp_path: Path) -> None:
    """The archive's pseudo-label rows train on the budget's pseudo-labels merged with the archive's (both
    from the row's teacher), with no soft distillation on the archive; a fully labelled training file is
    merged as it is."""
    common = ["--seeds", "0", "--steps", "2", "--unlabelled-videos", "2", "--videos", "4", "--frames", "6",
              "--frame-size", "64", "--no-progress"]
    rows = ["student-archive-pseudo-labels", "student-archive-pseudo-labels-image-teacher"]
    out = tmp_path / "budget"
    assert main(["bench", "accuracy", "--out", str(out), "--label-every", "3", "--rows", *rows, *common, *QUICK]) == 0
    archive = out / "data" / "unlabelled.json"
    budget = json.loads((out / "data-budget" / "train-label-every-3.json").read_text())
    n_archive = len(json.loads(archive.read_text())["images"])
    for row in rows:
        run = out / "runs" / row / "seed-0"
        cfg = json.loads((run / "config.json").read_text())
        merged = json.loads(Path(cfg["data"]["train"]).read_text())
        assert cfg["data"]["train"] == str(run.with_name("seed-0-train-and-archive.json"))
        assert cfg["data"]["unlabelled"] == [] and (cfg["distill"]["tfd"], cfg["distill"]["cqd"]) == (0.0, 0.0)
        assert len(merged["images"]) == len(budget["images"]) + n_archive
        names = {v["id"]: v["name"] for v in merged["videos"]}
        from_archive = [im for im in merged["images"] if names[im["video_id"]].startswith("unlabelled_")]
        assert len(from_archive) == n_archive
        assert all(im.get("pseudo_labelled") or im.get("labelled") is False for im in from_archive)
        teacher = str(out / "runs" / ROWS[row].teacher / "seed-0" / "best.ckpt")
        assert [p["source"] for p in merged["pseudo_labels"]] == [teacher, teacher]
    full = tmp_path / "full"
    assert main(["bench", "accuracy", "--out", str(full), "--rows", rows[0], *common, *QUICK]) == 0
    cfg = json.loads((full / "runs" / rows[0] / "seed-0" / "config.json").read_text())
    merged = json.loads(Path(cfg["data"]["train"]).read_text())
    train = json.loads((full / "data" / "train.json").read_text())
    assert len(merged["images"]) == len(train["images"]) + n_archive
    assert merged["pseudo_labels"]["source"] == str(full / "runs" / "teacher" / "seed-0" / "best.ckpt")
    assert not (full / "runs" / rows[0] / "seed-0-pseudo-labels.json").exists()  # nothing to label in train.json


def test_settings_are_written_once_and_checked(tmp_path: Path) -> None:
    settings = {"size": "tiny", "schedule": (480, 144, 80), "overrides": ["data.batch_size=8"]}
    check_settings(tmp_path, {**settings, "size": "r50"})
    check_settings(tmp_path, settings)  # no run yet (a first try that failed): the settings are replaced
    assert json.loads((tmp_path / "bench.json").read_text())["size"] == "tiny"
    run = tmp_path / "runs" / "baseline" / "seed-0"
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(b"")
    check_settings(tmp_path, dict(settings))  # the same settings (tuples read back as lists): accepted
    with pytest.raises(ConfigError, match=r"bench.json.*overrides: \['data.batch_size=8'\] before, \[\] now.*--overwrite"):
        check_settings(tmp_path, {**settings, "overrides": []})
    (tmp_path / "bench.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        check_settings(tmp_path, settings)


def test_overwrite_deletes_only_what_a_benchmark_wrote(tmp_path: Path) -> None:
    for folder in ("runs/baseline/seed-0", "data", "data-test", "data-budget"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("bench.json", "results.json", "results.md", "notes.txt"):
        (tmp_path / name).write_text("{}")
    clear_benchmark(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_test_videos_only_with_a_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--test-videos 0"):
        benchmark_accuracy(tmp_path, rows=["baseline"], test_videos=0)
    with pytest.raises(ConfigError, match="--test-videos 3"):
        benchmark_accuracy(tmp_path, rows=["baseline"], test_videos=3, data=("t.json", "v.json", None))


def test_data_are_written_under_the_folder_lock(monkeypatch, tmp_path: Path) -> None:
    """Two seeds started side by side into one folder: the one that writes the data holds the lock."""
    fcntl = pytest.importorskip("fcntl")
    import v2idetr.bench.accuracy as accuracy

    def locked() -> bool:
        with open(tmp_path / LOCK_FILE, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    seen: list[bool] = []

    def fake_generate(folder: Path, **kwargs) -> None:
        seen.append(locked())
        raise RuntimeError("stop here")

    monkeypatch.setattr(accuracy, "generate", fake_generate)
    with pytest.raises(RuntimeError, match="stop here"):
        benchmark_accuracy(tmp_path, rows=["baseline"], seeds=[0], progress=False)
    assert seen == [True] and not locked()


def test_archive_round2_rows(tmp_path: Path) -> None:
    """teacher-archive-round2 trains the video teacher once more, from its weights, on its own interpolated
    pseudo-labels of the budget's unlabelled frames and the archive; student-archive-round2 starts from that
    teacher and trains on the labelled frames alone (detection loss only)."""
    out = tmp_path / "acc"
    assert main(["bench", "accuracy", "--out", str(out), "--rows", "student-archive-round2", "--seeds", "0",
                 "--steps", "2", "--label-every", "3", "--unlabelled-videos", "2", "--videos", "4", "--frames", "6",
                 "--frame-size", "64", "--no-progress", *QUICK]) == 0
    runs = out / "runs"
    teacher = json.loads((runs / "teacher-archive-round2" / "seed-0" / "config.json").read_text())
    merged = runs / "teacher-archive-round2" / "seed-0-train-and-archive.json"
    assert teacher["data"]["train"] == str(merged) and teacher["model"]["temporal"] == "msi"
    assert teacher["train"]["init_from"] == str(runs / "teacher" / "seed-0" / "best.ckpt")
    rules = json.loads(merged.read_text())["pseudo_labels"]
    assert [(p["source"], p["interpolate"]) for p in rules] == [(str(runs / "teacher" / "seed-0" / "best.ckpt"), 4)] * 2
    student = json.loads((runs / "student-archive-round2" / "seed-0" / "config.json").read_text())
    assert student["data"]["train"] == str(out / "data-budget" / "train-label-every-3.json")
    assert (student["distill"]["tfd"], student["distill"]["cqd"]) == (0.0, 0.0)
    assert load_checkpoint(runs / "student-archive-round2" / "seed-0" / "best.ckpt").meta["distilled_from"] == str(
        runs / "teacher-archive-round2" / "seed-0" / "best.ckpt")


def test_archive_round2_image_rows(tmp_path: Path, monkeypatch) -> None:
    """The control of the second round: baseline-archive-round2 trains the image baseline once more, from its
    weights and for the teachers' steps, on its own interpolated pseudo-labels; its student starts from it and
    trains on the labelled frames alone, as student-init-only-image-teacher does from the baseline itself. Rows
    that learn from the archive through their teacher need one too."""
    out = tmp_path / "acc"
    args = ["bench", "accuracy", "--out", str(out), "--seeds", "0", "--steps", "3", "--teacher-steps", "1",
            "--student-steps", "1", "--distill-steps", "2", "--label-every", "3", "--unlabelled-videos", "2",
            "--videos", "4", "--frames", "6", "--frame-size", "64", "--no-progress", *QUICK]
    assert main([*args, "--rows", "student-archive-round2-image-teacher"]) == 0
    runs = out / "runs"
    baseline = str(runs / "baseline" / "seed-0" / "best.ckpt")
    round2 = json.loads((runs / "baseline-archive-round2" / "seed-0" / "config.json").read_text())
    merged = runs / "baseline-archive-round2" / "seed-0-train-and-archive.json"
    assert round2["data"]["train"] == str(merged) and round2["model"]["temporal"] == "none"
    assert round2["train"]["init_from"] == baseline and round2["train"]["steps"] == 1
    assert [p["source"] for p in json.loads(merged.read_text())["pseudo_labels"]] == [baseline] * 2
    assert not (runs / "teacher").exists()  # the control never sees the video teacher
    student = json.loads((runs / "student-archive-round2-image-teacher" / "seed-0" / "config.json").read_text())
    assert student["data"]["train"] == str(out / "data-budget" / "train-label-every-3.json")
    assert student["train"]["steps"] == 2 and (student["distill"]["tfd"], student["distill"]["cqd"]) == (0.0, 0.0)
    assert load_checkpoint(runs / "student-archive-round2-image-teacher" / "seed-0" / "best.ckpt").meta[
        "distilled_from"] == str(runs / "baseline-archive-round2" / "seed-0" / "best.ckpt")
    # the same without the archive's round: the baseline goes on
    assert main([*args, "--rows", "student-init-only-image-teacher"]) == 0
    plain = json.loads((runs / "student-init-only-image-teacher" / "seed-0" / "config.json").read_text())
    assert plain["data"]["train"] == student["data"]["train"] and plain["train"]["steps"] == 2
    assert load_checkpoint(runs / "student-init-only-image-teacher" / "seed-0" / "best.ckpt").meta[
        "distilled_from"] == baseline and not (runs / "teacher").exists()
    monkeypatch.setattr("v2idetr.bench.accuracy.generate", lambda *a, **k: pytest.fail("refused only after making data"))
    for row in ("student-archive-round2", "student-archive-round2-image-teacher"):
        assert row not in default_rows() and row in default_rows(archive=True)
        with pytest.raises(ConfigError, match="archive of unlabelled videos"):
            benchmark_accuracy(tmp_path / "none", rows=[row], steps=2)


def test_unknown_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student-xyz"):
        benchmark_accuracy(tmp_path, rows=["student-xyz"])
    with pytest.raises(ConfigError, match="student-from-baseline.*--teacher-steps and --student-steps"):
        benchmark_accuracy(tmp_path, rows=["baseline", "student-from-baseline"])


def test_lineage_schedule_gives_every_single_frame_row_the_same_steps(tmp_path: Path) -> None:
    def steps(schedule: Schedule, name: str) -> int:
        found = [o for o in schedule.overrides(ROWS[name], tmp_path / "base") if o.startswith("train.steps=")]
        return int(found[-1].split("=")[1])

    plain = Schedule(300)
    assert [steps(plain, n) for n in ("baseline", "baseline-2x", "teacher", "student")] == [300, 600, 300, 300]
    one = Schedule(480, teacher_steps=144, student_steps=80)
    assert one.teacher_start == 256
    assert steps(one, "baseline") == 480 and steps(one, "baseline-2x") == 960
    assert {steps(one, n) for n in ("teacher", "teacher-mean")} == {144}
    assert {steps(one, n) for n in ROWS if ROWS[n].kind == "distill"} == {80}
    # teachers start from the baseline's step-256 checkpoint, which the baseline validates and keeps
    init = [o for o in one.overrides(ROWS["teacher"], tmp_path / "base") if o.startswith("train.init_from=")]
    assert init == [f"train.init_from={tmp_path / 'base' / 'ckpt-00000256.ckpt'}"]
    assert "train.eval_every=256" in one.overrides(ROWS["baseline"], tmp_path / "base")
    # student-from-baseline starts at the baseline's step 400 (80 before its end), which it keeps
    assert one.student_start == 400
    assert "train.save_steps=[400]" in one.overrides(ROWS["baseline"], tmp_path / "base")
    late = one.overrides(ROWS["student-from-baseline"], tmp_path / "base")
    assert f"train.init_from={tmp_path / 'base' / 'ckpt-00000400.ckpt'}" in late and "train.steps=80" in late
    assert continued_schedule(80) == ["train.steps=80", "train.warmup_steps=8"]
    assert "teachers 144 from the baseline's step 256" in one.describe()
    assert "baseline-2x" not in one.describe(["baseline", "teacher"])
    assert "baseline-2x: 960" in one.describe(["baseline", "baseline-2x"])


def test_distill_steps_train_every_student_longer_and_only_the_students(tmp_path: Path) -> None:
    """--distill-steps: students of a lineage (or of a plain schedule) train M steps from their teacher,
    validated at each third; the baseline's and teachers' steps stay the lineage's; the folder records it."""
    base = tmp_path / "base"
    longer = Schedule(480, teacher_steps=144, student_steps=80, distill_steps=480)
    lineage = Schedule(480, teacher_steps=144, student_steps=80)
    for name in ("baseline", "teacher", "teacher-mean", "baseline-2x"):
        assert longer.overrides(ROWS[name], base) == lineage.overrides(ROWS[name], base), name
    for name in (n for n in ROWS if ROWS[n].kind == "distill"):
        got = longer.overrides(ROWS[name], base)
        assert got[:3] == ["train.steps=480", "train.warmup_steps=48", "train.eval_every=160"], name
    late = longer.overrides(ROWS["student-from-baseline"], base)
    assert late[-1] == f"train.init_from={base / 'ckpt-00000400.ckpt'}"
    plain = Schedule(300, distill_steps=90).overrides(ROWS["student-pseudo-labels"], base)
    assert plain == ["train.steps=90", "train.warmup_steps=9", "train.eval_every=30"]
    assert Schedule(300, distill_steps=90).overrides(ROWS["baseline"], base) == ["train.steps=300"]
    assert "students 480 steps from their teacher, validated every 160 (880 in all, the baseline 480)" in longer.describe()
    assert "(390 in all, the baseline 300)" in Schedule(300, distill_steps=90).describe()
    assert lineage.settings() == [480, 144, 80] and longer.settings() == [480, 144, 80, 480]
    with pytest.raises(ConfigError, match="--distill-steps 0"):
        Schedule(300, distill_steps=0)


@pytest.mark.parametrize(("teacher", "student"), [(None, 5), (5, None), (0, 2), (6, 4), (3, 0)])
def test_bad_lineages_are_refused(teacher: int | None, student: int | None) -> None:
    with pytest.raises(ConfigError, match="--teacher-steps|--student-steps"):
        Schedule(10, teacher, student)


def test_every_row_is_a_valid_config_and_ablations_change_one_thing() -> None:
    """Each row's overrides load on its config; a distillation row changes only the keys it names."""
    files = dict(zip(("student", "teacher"), SIZES["tiny"], strict=True))
    defaults = asdict(load_config(shipped_configs() / files["student"]).distill)
    for row in ROWS.values():
        cfg = load_config(shipped_configs() / files[row.config], list(row.overrides))
        assert (cfg.data.num_frames > 1) == (row.config == "teacher"), row.name
        if row.kind == "distill":
            changed = {f"distill.{k}" for k, v in asdict(cfg.distill).items() if v != defaults[k]}
            assert changed == {o.split("=")[0] for o in row.overrides}, row.name
    no_proposals = load_config(shipped_configs() / files["student"], list(ROWS["student-no-proposals"].overrides))
    assert no_proposals.distill.cqd_proposals == 0.0


def test_every_size_is_a_shipped_student_and_its_teacher() -> None:
    for size, (student, teacher) in SIZES.items():
        s, t = load_config(shipped_configs() / student), load_config(shipped_configs() / teacher)
        assert s.data.num_frames == 1 and t.data.num_frames > 1 and t.model.temporal != "none", size
        assert s.model.backbone == t.model.backbone and s.model.hidden_dim == t.model.hidden_dim, size
    assert load_config(shipped_configs() / SIZES["lite"][0]).model.backbone == "efficientnet_lite0"
