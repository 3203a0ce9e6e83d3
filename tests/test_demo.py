"""`v2idetr demo --quick`: every stage of the main job runs and the report shows the three models."""

from __future__ import annotations

from pathlib import Path

from v2idetr.cli import main


def test_quick_demo_runs_every_stage(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for name in ("| baseline |", "| teacher |", "| student |", "yona", "AP50 by degradation"):
        assert name in report
    for name in ("report.html", "training_curves.png", "pr_curves.png"):
        assert (out / name).is_file(), name
    assert "<table>" in (out / "report.html").read_text()
    assert len(list((out / "video").glob("*.mp4"))) == 1
    for name in ("baseline", "teacher", "student"):
        assert (out / name / "best.ckpt").is_file()
        assert (out / name / "eval" / "metrics.json").is_file()
    printed = capsys.readouterr().out
    assert "validate train.json: 0 problem(s)" in printed
