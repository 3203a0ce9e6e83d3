"""`v2idetr demo`: the whole V2I-DETR story on a synthetic ultrasound dataset, on the CPU.

Generates the data with a label budget (1 training frame in ``DEMO_LABEL_EVERY`` per video labelled,
the rest unlabelled, as clinical video is labelled), validates it and prints its statistics, trains
the image baseline (on the labelled frames), the video teacher (labelled key frames, any support
frames) and two distilled students: the paper's, on the labelled frames, and one that also learns
from the unlabelled frames, where the teacher is its only supervision (checkpoints chosen on the
validation split). It evaluates them on a held-out test split generated from another seed (the same
one `v2idetr bench accuracy` uses), measures their speed, and writes ``report.md``. One lineage of
weights, so that the comparison is fair at a CPU budget: the teacher starts from the baseline's
checkpoint at step S (its MSI fresh) and trains N steps, the students start from the teacher and
train K, and the baseline goes on to S + N + K: every single-frame detector in the report has had
the same number of optimiser steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from v2idetr import api
from v2idetr.argtypes import non_negative_int, out_folder, positive_int
from v2idetr.atomic import atomic_write_text
from v2idetr.bench.accuracy import label_budget, synthetic_splits, train_row
from v2idetr.bench.rows import ROWS
from v2idetr.bench.schedule import Schedule
from v2idetr.bench.speed import benchmark_speed, format_speed_table
from v2idetr.bench.tables import gap_closed
from v2idetr.config import shipped_configs
from v2idetr.data.commands import format_stats
from v2idetr.data.index import DatasetIndex
from v2idetr.data.load import load_index
from v2idetr.data.validate import validate
from v2idetr.deploy.runtime import Detector
from v2idetr.engine.evaluator import (
    DEGRADED,
    DEGRADED_ONE_FRAME,
    ONE_FRAME_SUFFICES,
    format_metrics_table,
    plot_pr_curves,
)
from v2idetr.errors import ConfigError, DatasetError
from v2idetr.report import annotated_video, disagreement_sheet, plot_training_curves, write_html

log = logging.getLogger(__name__)


# --quick: a smoke run of every stage (the test suite runs it); not meant to learn anything.
QUICK_BATCH = 4
QUICK_MODEL = [
    "model.hidden_dim=32",
    "model.nheads=4",
    "model.enc_layers=1",
    "model.dec_layers=2",
    "model.ffn_dim=64",
    "model.num_queries=10",
    "model.dn_number=10",
    "data.train_sizes=[64]",
    "data.test_size=64",
    "data.max_size=96",
    f"data.batch_size={QUICK_BATCH}",
    "train.warmup_steps=2",
]


# The full run's schedule on top of the tiny configs: batch 8 (twice the optimiser steps of batch 16
# for the same compute, which is what a 20-minute CPU budget buys) and a warm-up that fits it.
DEMO_BATCH = 8
DEMO_SCHEDULE = [f"data.batch_size={DEMO_BATCH}", "train.warmup_steps=50"]
# Shares of the lineage's steps: the teacher's and the student's; the baseline's checkpoint the
# teacher starts from is at the rest.
TEACHER_SHARE = 0.3
# Test videos of the full run (the benchmark's default is a quarter of the 40 train + val videos): the
# teacher's lead on degraded frames is worth a handful of lesions per 10 videos, too few for one run's
# share of it to mean anything; 40 videos cost about a minute more of evaluation.
DEMO_TEST_VIDEOS = 40
STUDENT_SHARE = 1 / 6
# The label budget: 1 training frame in 10 per video keeps its boxes (`data sparsify --every 10`), the
# rest are unlabelled frames; validation and test stay fully labelled.
DEMO_LABEL_EVERY = 10
# The models, as `bench accuracy` rows; the last is the headline student (figures, video, gap shares).
DEMO_ROWS = ("baseline", "teacher", "student", "student-unlabelled")
STUDENT = DEMO_ROWS[-1]


@dataclass
class DemoPlan:
    videos: int
    frames: int
    size: int
    test_videos: int
    schedule: Schedule  # baseline S + N + K steps, teacher N from the baseline's step S, student K
    batch_size: int
    extra: list[str]
    budget_min: float
    label_every: int


def plan(quick: bool, steps: int | None) -> DemoPlan:
    """``steps``: the baseline's steps S + N + K (default 480)."""
    total = steps or (3 if quick else 480)
    if total < 3:
        raise ConfigError(f"demo --steps {total}: expected >= 3 (baseline, teacher and student need one each)")
    student = max(1, round(total * STUDENT_SHARE))
    teacher = max(1, min(total - student - 1, round(total * TEACHER_SHARE)))
    sizes: dict[str, Any] = (
        dict(videos=6, frames=8, size=64, test_videos=4, batch_size=QUICK_BATCH, extra=QUICK_MODEL, budget_min=2.0,
             label_every=2)
        if quick
        else dict(videos=40, frames=48, size=128, test_videos=DEMO_TEST_VIDEOS, batch_size=DEMO_BATCH,
                  extra=DEMO_SCHEDULE, budget_min=20.0, label_every=DEMO_LABEL_EVERY)
    )
    return DemoPlan(schedule=Schedule(total, teacher_steps=teacher, student_steps=student), **sizes)


def bench_command(p: DemoPlan, seed: int) -> str:
    """The `bench accuracy` command that reruns this demo's models (its rows and seed) over seeds."""
    s = p.schedule
    return (f"v2idetr bench accuracy --preset ultrasound --videos {p.videos} --frames {p.frames} --frame-size {p.size} "
            f"--test-videos {p.test_videos} --label-every {p.label_every} --steps {s.steps} "
            f"--teacher-steps {s.teacher_steps} --student-steps {s.student_steps} --seeds {seed} "
            f"--rows {' '.join(DEMO_ROWS)} --out runs/bench/demo " + " ".join(p.extra))


def _row(name: str, metrics: dict[str, Any], minutes: float, speed: dict[str, Any]) -> str:
    def f(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"| {name} | {f('AP')} | {f('AP50')} | {f('AP75')} | {f('precision')} | {f('recall')} | {f('f1')} | "
        f"{f('flicker')} | {metrics.get('false_alarms_per_1000', 0):.1f} | {speed['fps']:.1f} | "
        f"{speed['params_m']:.2f} M | {speed['gflops'] or 0:.2f} | {minutes:.1f} |"
    )


def run_demo(out: Path, quick: bool = False, steps: int | None = None, seed: int = 0) -> Path:
    """Run every stage and return the path of ``report.md``; ``seed`` is the training seed (the data
    are the benchmark's, so `bench_command` reruns this demo's models over seeds)."""
    p = plan(quick, steps)
    configs = shipped_configs()
    started = time.monotonic()
    print(f"v2idetr demo: {'quick smoke run' if quick else 'full run'}; {p.schedule.describe()}; time budget: "
          f"{p.budget_min:.0f} minutes on a 2-core CPU. Output: {out}")

    print(f"\n[1/5] synthetic ultrasound videos, 1 training frame in {p.label_every} per video labelled")
    data = synthetic_splits(out, "ultrasound", p.videos, p.frames, p.size, test_videos=p.test_videos, fresh=True,
                            progress=not quick)
    data = label_budget(data, p.label_every, out / "data-budget", fresh=True)
    for split in (data.train, data.val, data.test):
        problems = validate(split)
        print(f"validate {split.relative_to(out)}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        if problems:
            raise DatasetError(problems, header=f"{split}: the generated dataset is invalid")
    print(format_stats(load_index(data.train)))
    test = load_index(data.test)
    print(f"test split: {len(test.videos)} videos from another generator seed, {test.num_frames} frames")

    runs: dict[str, dict[str, Any]] = {}
    stages = {
        "baseline": "[2/5] image baseline (student-tiny, detection loss on the labelled frames)",
        "teacher": f"[3/5] video teacher (teacher-tiny: MSI over 3-frame clips, from the baseline's step "
                   f"{p.schedule.teacher_start}; labelled key frames, support frames any)",
        "student": "[4/5] the paper's student (TFD + CQD on the labelled frames, from the teacher's weights)",
        STUDENT: "[4/5] the student on every frame (TFD + CQD; half of each batch unlabelled frames, where the "
                 "teacher's detections mask TFD and there is no detection loss)",
    }
    for name in DEMO_ROWS:
        print(f"\n{stages[name]}")
        t0 = time.monotonic()
        train_row(ROWS[name], seed, data, "tiny", p.schedule, p.extra, lambda row: out / row, progress=not quick)
        runs[name] = {"minutes": (time.monotonic() - t0) / 60.0}

    print("\n[5/5] evaluation on the test split (checkpoints chosen on validation) and speed")
    for name in DEMO_ROWS:
        ckpt = out / name / "best.ckpt"
        metrics = api.evaluate(ckpt, data.test, out_dir=out / name / "test", device="cpu", progress=False)
        runs[name]["metrics"] = metrics
        print(f"\n== {name} ==\n{format_metrics_table(metrics, max_videos=0)}")
    speed = benchmark_speed(
        configs / "student-tiny.yaml", p.extra, size=64 if quick else 128, device="cpu", batches=(1,),
        teacher_config_path=str(configs / "teacher-tiny.yaml"), backends=("eager",),
        checkpoints={name: str(out / name / "best.ckpt") for name in ("baseline", "teacher", "student")},
        iters=5 if quick else 30, warmup=2, rounds=1 if quick else 3,
    )
    print(format_speed_table(speed))
    for row in speed["rows"]:
        runs[row["model"]]["speed"] = row
    runs[STUDENT]["speed"] = runs["student"]["speed"]  # the same network

    print("\nreport: curves, disagreements between baseline and student, annotated video")
    figures = _figures(out, runs, test)
    report = _report(runs, p, time.monotonic() - started, quick, figures, test, seed)
    path = out / "report.md"
    atomic_write_text(path, report)
    write_html(report, out / "report.html", "v2idetr demo report")
    atomic_write_text(out / "report.json", json.dumps(
        {k: {**v, "metrics": {m: x for m, x in v["metrics"].items() if not isinstance(x, (dict, list))}}
         for k, v in runs.items()}, indent=2, default=str))
    print(f"\n{report}\nwrote {path}")
    minutes = (time.monotonic() - started) / 60.0
    if minutes > p.budget_min:
        print(f"note: the demo took {minutes:.1f} minutes, over its {p.budget_min:.0f}-minute budget: this machine "
              "is slower than a 2-core laptop CPU, or other jobs shared its cores")
    return path


def _figures(out: Path, runs: dict[str, dict[str, Any]], test: DatasetIndex) -> dict[str, Any]:
    """The report's pictures and video, as paths relative to ``out``."""
    plot_training_curves({n: out / n for n in DEMO_ROWS}, out / "training_curves.png")
    curves = {n: (c["recall"], c["precision"]) for n in DEMO_ROWS if (c := runs[n]["metrics"].get("pr_curve"))}
    plot_pr_curves(curves, out / "pr_curves.png", ap50={n: runs[n]["metrics"]["AP50"] for n in DEMO_ROWS})
    detectors = {n: Detector.from_checkpoint(out / n / "best.ckpt", device="cpu") for n in ("baseline", STUDENT)}
    sheet, disagreements = disagreement_sheet(test, detectors, out / "disagreements.png")
    video = annotated_video(detectors[STUDENT], test, out / "video")
    return {
        "curves": "training_curves.png",
        "pr": "pr_curves.png",
        "sheet": None if sheet is None else sheet.name,
        "disagreements": disagreements,
        "video": str(video.relative_to(out)),
    }


def _split_metrics(runs: dict[str, dict[str, Any]], name: str, split: str | None) -> dict[str, Any]:
    """A model's test metrics on a degradation split (``None``: all frames)."""
    m = runs[name]["metrics"]
    return m["by_degradation"].get(split, {}) if split else m


def _gap_closed(runs: dict[str, dict[str, Any]], split: str | None, student: str = STUDENT) -> float | None:
    """Share of the baseline-to-teacher AP50 gap a student closes (on a degradation split or overall)."""
    base, teacher, mine = (_split_metrics(runs, n, split).get("AP50") for n in ("baseline", "teacher", student))
    return gap_closed(base, teacher, mine)


def _share(gap: float | None) -> str:
    if gap is None:
        return "n/a (the teacher is not above the baseline)"
    return f"{100 * gap:.0f}%" + (" (above 100%: the student beats the teacher)" if gap > 1 else "")


def _lead_in_lesions(runs: dict[str, dict[str, Any]], split: str | None) -> str:
    """The teacher's lead as a count of lesions, so that a reader sees how few decide the share: one
    run on a small test split is a rough reading (`bench accuracy --test-videos` measures it better)."""
    base, teacher = _split_metrics(runs, "baseline", split), _split_metrics(runs, "teacher", split)
    if base.get("AP50") is None or teacher.get("AP50") is None or not base.get("num_gt"):
        return ""
    lead = teacher["AP50"] - base["AP50"]
    return (f" (the teacher leads by {lead:+.3f} AP50 on {base['num_gt']} lesions: roughly "
            f"{round(lead * base['num_gt'])} lesions' worth)")


def _report(
    runs: dict[str, dict[str, Any]], p: DemoPlan, seconds: float, quick: bool, figures: dict[str, Any],
    test: DatasetIndex, seed: int,
) -> str:
    protocol = runs["baseline"]["metrics"]["protocol"]
    lines = [
        "# v2idetr demo report",
        "",
        f"Synthetic ultrasound preset, {p.videos} videos x {p.frames} frames at {p.size} px, 1 training frame in "
        f"{p.label_every} per video labelled (the rest unlabelled; validation and test fully labelled); "
        f"batch {p.batch_size}, {p.schedule.describe()}; checkpoints chosen on the validation split, numbers on "
        f"the test split ({len(test.videos)} videos, {test.num_frames} frames from another generator seed); "
        f"image-level protocol `{protocol}`; "
        "CPU speed at batch 1 "
        f"({torch.get_num_threads()} threads). Total {seconds / 60:.1f} min, "
        + ("within" if seconds <= 60 * p.budget_min else "over") + f" the {p.budget_min:.0f}-minute budget"
        + (" (quick smoke run: the numbers mean nothing)." if quick else "."),
        "",
        f"`student` is the paper's (distilled on the labelled frames), `{STUDENT}` also learns from the unlabelled "
        "frames, where the teacher is its only supervision (half of each batch; TFD masked by the teacher's own "
        "detections there, no detection loss).",
        "",
        "| model | AP | AP50 | AP75 | P | R | F1 | flicker | FA/1000 neg. frames | FPS | params | GFLOPs | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in DEMO_ROWS:
        r = runs[name]
        lines.append(_row(name, r["metrics"], r["minutes"], r["speed"]))
    degradations = list(runs["baseline"]["metrics"].get("by_degradation", {}))  # the evaluator's order: pooled last
    if degradations:
        lines += ["", "AP50 by degradation of the key frame:", "",
                  "| model | " + " | ".join(degradations) + " |", "|---|" + "---|" * len(degradations)]
        for name in DEMO_ROWS:
            split = runs[name]["metrics"]["by_degradation"]
            cells = [
                "n/a" if split[d].get("AP50") is None else f"{split[d]['AP50']:.3f}" for d in degradations
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        counts = runs["baseline"]["metrics"]["by_degradation"]
        lines.append("| lesions (test) | " + " | ".join(str(counts[d].get("num_gt", "n/a")) for d in degradations) + " |")
    for label, split in (("all frames", None), ("degraded frames", DEGRADED),
                         ("degraded frames one frame suffices for (all but `hopeless`, whose lesion left no trace: "
                          "what a single-frame student can take)", DEGRADED_ONE_FRAME),
                         ("all frames one frame suffices for (clean ones too)", ONE_FRAME_SUFFICES)):
        lines += ["", f"Share of the baseline-to-teacher AP50 gap {STUDENT} closes on {label}: "
                  + _share(_gap_closed(runs, split)) + f"; the paper's student: {_share(_gap_closed(runs, split, 'student'))}"
                  + _lead_in_lesions(runs, split)]
    lines += ["", "These shares come from one training seed and rest on the lesions counted above, so they swing "
              "between seeds; the `bench accuracy` command below, with more seeds, gives their mean and spread "
              "(the README's Results give both presets over several seeds)."]
    lines += ["", "Same number of steps for every single-frame detector: the teacher starts from the baseline's "
              f"checkpoint at step {p.schedule.teacher_start} (`train.init_from`; its MSI fresh), the "
              "students from the teacher's shared weights (`distill.init_from_teacher=true`), and the baseline goes "
              f"on to step {p.schedule.steps}. One seed: `{bench_command(p, seed)}` trains the same lineage on the "
              "same data and test split (add seeds for mean ± standard deviation)."]
    lines += ["", "## Training curves", "", f"![training curves]({figures['curves']})",
              "", "## Precision-recall (test)", "", f"![PR curves]({figures['pr']})",
              "", f"## Degraded frames where baseline and {STUDENT} differ", ""]
    if figures["sheet"]:
        lines += [f"{figures['disagreements']} degraded frames where they find a different number of lesions "
                  "(ground truth white; a model's boxes green when it found every lesion, red otherwise):", "",
                  f"![disagreements]({figures['sheet']})"]
    else:
        lines.append(f"Baseline and {STUDENT} find the same lesions on every degraded frame.")
    lines += ["", f"{STUDENT} predictions on the test video with the most degraded frames: {figures['video']}"]
    return "\n".join(lines) + "\n"


def _demo(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), quick=args.quick, steps=args.steps, seed=args.seed)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job end to end on synthetic data (what `make demo` runs)")
    p.add_argument("--out", type=out_folder, default="runs/demo")
    p.add_argument("--quick", action="store_true", help="2-minute smoke version of every stage")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="the baseline's training steps S+N+K (default 480); the teacher trains N = 30%% of them from "
                   "the baseline's step S, the student K = 1/6 from the teacher")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="training seed (the data are generator seeds 0 and 1000, as in `v2idetr bench accuracy`)")
    p.set_defaults(func=_demo)
