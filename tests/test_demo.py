"""`v2idetr demo --quick`: every stage of the main job runs and the report shows the three models."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from v2idetr.cli import main
from v2idetr.data.load import load_index
from v2idetr.demo import DEMO_ROWS, _lead_in_lesions, bench_command, plan
from v2idetr.engine.evaluator import DEGRADED
from v2idetr.errors import ConfigError


def test_quick_demo_runs_every_stage(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for name in ("| baseline |", "| teacher |", "| student |", "| student-unlabelled |", "yona", "AP50 by degradation",
                 "1 training frame in 2 per video labelled",
                 "numbers on the test split", "degraded frames one frame suffices for", "| lesions (test) |"):
        assert name in report
    for name in ("report.html", "training_curves.png", "pr_curves.png"):
        assert (out / name).is_file(), name
    assert "<table>" in (out / "report.html").read_text()
    assert len(list((out / "video").glob("*.mp4"))) == 1
    # checkpoints chosen on validation, numbers on a test split of other videos
    test = load_index(out / "data-test" / "train.json")
    val_images = {f.path for f in load_index(out / "data" / "val.json").frames()}
    assert test.num_frames and not val_images & {f.path for f in test.frames()}
    for name in DEMO_ROWS:
        assert (out / name / "best.ckpt").is_file()
        assert json.loads((out / name / "test" / "metrics.json").read_text())["num_frames"] == test.num_frames
    printed = capsys.readouterr().out
    for split in ("data-budget/train-label-every-2.json", "data/val.json", "data-test/train.json"):
        assert f"validate {split}: 0 problem(s)" in printed
    # the label budget: the image baseline and the teacher see the labelled frames, one student all of them
    budget = load_index(out / "data-budget" / "train-label-every-2.json")
    assert 0 < budget.num_unlabelled_frames < budget.num_frames
    configs = {n: json.loads((out / n / "config.json").read_text()) for n in DEMO_ROWS}
    assert {c["data"]["train"] for c in configs.values()} == {str(out / "data-budget" / "train-label-every-2.json")}
    assert configs["student"]["distill"]["unlabelled"] == 0 and configs["student-unlabelled"]["distill"]["unlabelled"] > 0
    # one lineage: the teacher starts from the baseline's step-1 checkpoint (kept), the student from it
    s = plan(True, None).schedule
    start = out / "baseline" / f"ckpt-{s.teacher_start:08d}.ckpt"
    assert start.is_file()
    teacher_cfg = json.loads((out / "teacher" / "config.json").read_text())
    assert teacher_cfg["train"]["init_from"] == str(start) and teacher_cfg["train"]["steps"] == s.teacher_steps
    assert json.loads((out / "baseline" / "config.json").read_text())["train"]["steps"] == s.steps
    assert json.loads((out / "student" / "config.json").read_text())["train"]["steps"] == s.student_steps
    # the bench command the report names trains the very same runs (configs equal up to the folders)
    command = shlex.split(re.search(r"`(v2idetr bench accuracy [^`]*)`", report).group(1))[1:]
    bench = tmp_path / "bench"
    command[command.index("--out") + 1] = str(bench)
    assert main([*command, "--no-progress"]) == 0
    for name in DEMO_ROWS:
        config = (bench / "runs" / name / "seed-0" / "config.json").read_text()
        for other in DEMO_ROWS:
            config = config.replace(str(bench / "runs" / other / "seed-0"), str(out / other))
        bench_cfg, demo_cfg = json.loads(config.replace(str(bench), str(out))), json.loads((out / name / "config.json").read_text())
        assert bench_cfg.pop("run_id") != demo_cfg.pop("run_id") and bench_cfg == demo_cfg  # two runs, one recipe
    # ... and is measured on the same test videos
    bench_test = load_index(bench / "data-test" / "train.json")
    assert [v.name for v in bench_test.videos] == [v.name for v in test.videos]
    assert bench_test.num_frames == test.num_frames


@pytest.mark.parametrize("steps", [None, 3, 4, 7, 1000])
def test_plan_gives_every_single_frame_detector_the_same_steps(steps: int | None) -> None:
    for quick in (False, True):
        s = plan(quick, steps).schedule
        assert s.teacher_start + s.teacher_steps + s.student_steps == s.steps
        assert min(s.teacher_start, s.teacher_steps, s.student_steps) >= 1


def test_default_plan_and_bad_steps() -> None:
    p = plan(False, None)
    assert (p.schedule.steps, p.schedule.teacher_start, p.schedule.teacher_steps, p.schedule.student_steps) == (
        480, 256, 144, 80)
    assert p.budget_min == 20.0 and f"data.batch_size={p.batch_size}" in p.extra
    # a test split big enough for the degraded-frame shares, which the bench command reproduces
    assert p.test_videos == 40 and "--test-videos 40 " in bench_command(p, 0)
    assert p.label_every == 10 and "--label-every 10 " in bench_command(p, 0)
    with pytest.raises(ConfigError, match="--steps 2"):
        plan(False, 2)


def test_lead_in_lesions_counts_the_teachers_lead_on_the_split() -> None:
    def run(ap50_all: float | None, ap50_degraded: float | None) -> dict:
        split = {"AP50": ap50_degraded, "num_gt": 40}
        return {"metrics": {"AP50": ap50_all, "num_gt": 200, "by_degradation": {DEGRADED: split}}}

    runs = {"baseline": run(0.80, 0.50), "teacher": run(0.85, 0.60), "student": run(0.84, 0.55)}
    assert _lead_in_lesions(runs, DEGRADED) == " (the teacher leads by +0.100 AP50 on 40 lesions: roughly 4 lesions' worth)"
    assert "+0.050 AP50 on 200 lesions: roughly 10" in _lead_in_lesions(runs, None)
    runs["teacher"] = run(0.85, None)  # a split without lesions in the teacher's run: nothing to count
    assert _lead_in_lesions(runs, DEGRADED) == ""
