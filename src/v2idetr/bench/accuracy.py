"""`v2idetr bench accuracy`: the paper's comparison and ablation tables, over several seeds.

Every row is one training recipe (image baseline; teacher with MSI or plain frame averaging;
students distilled with TFD, CQD or both, Gaussian or binary masks, random or fixed cross-view
sampling), run with the same schedule and seeds as every other row: every row ``--steps`` (students
on top of their teacher's), or one lineage of weights as in ``v2idetr demo`` (``Schedule``). Checkpoints are chosen on the
validation split and every number is measured on the **test** split (a synthetic preset gets a
test set generated from other seeds, so no video is shared). Finished row/seed runs are kept and
never re-run; an interrupted one resumes from its last checkpoint. ``results.json`` and
``results.md`` are rewritten after every run, so partial tables are visible while it works.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from v2idetr import api
from v2idetr.atomic import atomic_write_json, atomic_write_text, folder_lock
from v2idetr.bench.folder import LOCK_FILE, check_settings, clear_benchmark
from v2idetr.bench.pseudo_label_data import pseudo_label_training_file
from v2idetr.bench.rows import ROWS, Row, default_rows, uses_archive
from v2idetr.bench.schedule import Schedule
from v2idetr.bench.tables import METRICS, default_pairs, format_table, paired_differences, summarise
from v2idetr.config import shipped_configs
from v2idetr.data.archive import ARCHIVE_FILE, synthetic_archive
from v2idetr.data.load import load_index
from v2idetr.data.synthetic import generate
from v2idetr.data.unlabelled import sparsify
from v2idetr.engine.evaluator import DEGRADED, DEGRADED_ONE_FRAME, ONE_FRAME_SUFFICES
from v2idetr.errors import ConfigError

log = logging.getLogger(__name__)

SIZES = {
    "tiny": ("student-tiny.yaml", "teacher-tiny.yaml"),
    "lite": ("student-lite.yaml", "teacher-lite.yaml"),
    "r50": ("student-r50.yaml", "teacher-r50.yaml"),
}


@dataclass
class Splits:
    """``train`` holds the label budget (1 frame in ``label_every`` labelled), ``train_all_labels`` the
    same frames all labelled (the ceiling row's); validation and test are fully labelled."""

    train: Path
    val: Path
    test: Path
    test_is_val: bool = False
    train_all_labels: Path | None = None
    unlabelled: Path | None = None  # the archive of unlabelled videos the archive rows distil on too

    def training(self, row: Row) -> Path:
        return self.train_all_labels if row.labels == "all" and self.train_all_labels else self.train


def label_budget(splits: Splits, every: int, folder: Path, fresh: bool = False) -> Splits:
    """``splits`` whose training labels keep 1 frame in ``every`` per video (``data sparsify``), written
    into ``folder`` once (again if ``fresh``); the original labels stay the ceiling's."""
    if every == 1:
        return splits
    sparse = folder / f"{splits.train.stem}-label-every-{every}.json"
    if fresh or not sparse.is_file():
        index = sparsify(load_index(splits.train), every)
        atomic_write_json(sparse, index.to_coco_vid(image_root=sparse.resolve().parent))
    return replace(splits, train=sparse, train_all_labels=splits.train)


def default_test_videos(videos: int) -> int:
    """A quarter as many test videos as train + val, at least 4."""
    return max(4, videos // 4)


def synthetic_splits(out: Path, preset: str, videos: int, frames: int, size: int, seed: int = 0, *,
                     test_videos: int | None = None, unlabelled_videos: int = 0, fresh: bool = False,
                     progress: bool = False) -> Splits:
    """Train/val from one generator seed, test (``test_videos``, default `default_test_videos`) from
    another, and ``unlabelled_videos`` archive videos from a third (`synthetic_archive`), so no video
    is shared; reused if present unless ``fresh``."""
    data, test = out / "data", out / "data-test"
    archive = data / ARCHIVE_FILE if unlabelled_videos else None
    if archive is not None and (fresh or not archive.is_file()):
        synthetic_archive(data, preset, unlabelled_videos, frames, size, seed, overwrite=True, progress=progress)
    if fresh or not (data / "val.json").is_file():
        generate(data, preset=preset, videos=videos, frames=frames, size=size, seed=seed, overwrite=True,
                 progress=progress)
    if fresh or not (test / "train.json").is_file():
        generate(test, preset=preset, videos=test_videos or default_test_videos(videos), frames=frames, size=size,
                 seed=seed + 1000, val_fraction=0.0, overwrite=True, progress=progress)
    return Splits(data / "train.json", data / "val.json", test / "train.json", unlabelled=archive)


def _run_dir(out: Path, row: str, seed: int) -> Path:
    return out / "runs" / row / f"seed-{seed}"


def _row_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    splits = metrics.get("by_degradation", {})
    return {
        "AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"], "f1": metrics["f1"],
        "AP50_degraded": splits.get(DEGRADED, {}).get("AP50"),
        "AP50_degraded_one_frame": splits.get(DEGRADED_ONE_FRAME, {}).get("AP50"),
        "AP50_one_frame_suffices": splits.get(ONE_FRAME_SUFFICES, {}).get("AP50"),
    }


def _run_one(row: Row, seed: int, out: Path, splits: Splits, size: str, schedule: Schedule, extra: Sequence[str],
             progress: bool) -> dict[str, Any]:
    """Train (or resume) one row for one seed and evaluate its best checkpoint on the test split; first
    the runs it starts from (a student's teacher; in a lineage, a teacher's baseline)."""
    run = _run_dir(out, row.name, seed)
    result_file = run / "test-metrics.json"
    if result_file.is_file():
        record = json.loads(result_file.read_text())
        if all(key in record for key in METRICS):
            log.info("%s seed %d: done before, not re-run", row.name, seed)
            return record
        # written by a version that measured fewer metrics: evaluate the same checkpoint again
        log.info("%s seed %d: trained before, evaluating it again for %s", row.name, seed,
                 ", ".join(k for k in METRICS if k not in record))
        return _test_record(record, _scored(row, out, seed), splits)
    for needs in _needs(row, schedule):
        if not (_run_dir(out, needs, seed) / "test-metrics.json").is_file():
            _run_one(ROWS[needs], seed, out, splits, size, schedule, extra, progress)
    if row.kind == "view":
        return _test_record({"row": row.name, "seed": seed, "minutes": 0.0, "resumed": False},
                            _scored(row, out, seed), splits)
    if row.start == "baseline":
        start = schedule.student_start_checkpoint(_run_dir(out, "baseline", seed))
        if not start.is_file():
            raise ConfigError(f"{row.name} seed {seed}: {start} is missing (the baseline was trained by an older "
                              f"v2idetr that did not keep it); delete {start.parent} to train the baseline again")
    resume = (run / "last.ckpt").is_file()
    started = time.monotonic()
    train_row(row, seed, splits, size, schedule, extra, lambda name: _run_dir(out, name, seed), resume, progress)
    minutes = (time.monotonic() - started) / 60.0
    return _test_record({"row": row.name, "seed": seed, "minutes": minutes, "resumed": resume},
                        _scored(row, out, seed), splits)


def train_row(row: Row, seed: int, splits: Splits, size: str, schedule: Schedule, extra: Sequence[str],
              run_of: Callable[[str], Path], resume: bool = False, progress: bool = True) -> None:
    """Train one row for one seed into ``run_of(row.name)``; ``run_of`` names the folders of the runs
    it starts or learns from (the bench's ``runs/<row>/seed-N``, the demo's ``<out>/<row>``). Without
    ``resume`` whatever an earlier, unfinished attempt left in the row's folder is replaced."""
    student_cfg, teacher_cfg = (str(shipped_configs() / name) for name in SIZES[size])
    train = splits.training(row)
    if row.archive and splits.unlabelled is None:
        raise ConfigError(f"row {row.name} learns from an archive of unlabelled videos: give --unlabelled-videos N "
                          "(synthetic) or --unlabelled PATH (your own)")
    if row.pseudo_labels:
        train = pseudo_label_training_file(run_of(row.name), run_of(row.teacher) / "best.ckpt", train,
                                           splits.unlabelled if row.archive else None, resume, progress,
                                           row.pseudo_temporal, row.pseudo_interpolate)
    overrides = [f"data.train={train}", f"data.val={splits.val}", f"train.seed={seed}", *extra,
                 *row.overrides, *schedule.overrides(row, run_of("baseline"))]
    if row.starts_from:
        overrides.append(f"train.init_from={run_of(row.starts_from) / 'best.ckpt'}")
    if row.archive and not row.pseudo_labels:
        overrides.append(f"data.unlabelled={splits.unlabelled}")
    if row.kind == "train":
        api.train(teacher_cfg if row.config == "teacher" else student_cfg, overrides, run_of(row.name), resume=resume,
                  progress=progress, overwrite=not resume)
    else:
        api.distill(run_of(row.teacher) / "best.ckpt", student_cfg, overrides, run_of(row.name), resume=resume,
                    progress=progress, overwrite=not resume)


def _needs(row: Row, schedule: Schedule) -> list[str]:
    """The rows whose runs ``row`` starts from or learns from (same seed)."""
    if row.kind == "view":
        return [row.teacher]
    if row.kind == "distill":
        return sorted({row.teacher, row.starts_from or row.teacher})
    needs = ["baseline"] if row.config == "teacher" and schedule.lineage else []
    return needs + ([row.teacher] if row.pseudo_labels or row.starts_from else [])


def _scored(row: Row, out: Path, seed: int) -> tuple[Path, Path, str]:
    """Where a row's test numbers go, the checkpoint they measure and the teacher view it is shown."""
    run = _run_dir(out, row.name, seed)
    if row.kind == "view":
        return run, _run_dir(out, row.teacher, seed) / "best.ckpt", row.view
    return run, run / "best.ckpt", "clip"


def _test_record(record: dict[str, Any], scored: tuple[Path, Path, str], splits: Splits) -> dict[str, Any]:
    """``record`` plus the test metrics of a checkpoint (`_scored`), written to ``test-metrics.json``."""
    run, checkpoint, view = scored
    metrics = api.evaluate(checkpoint, splits.test, out_dir=run / "test", progress=False, teacher_view=view)
    record = {**record, **_row_metrics(metrics), "protocol": metrics["protocol"]}
    atomic_write_json(run / "test-metrics.json", record, indent=2)
    return record


def benchmark_accuracy(
    out: str | Path,
    rows: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 800,
    size: str = "tiny",
    preset: str | None = "ultrasound",
    data: tuple[str, str, str | None] | None = None,
    synth: tuple[int, int, int] = (40, 48, 128),
    test_videos: int | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    teacher_steps: int | None = None,
    student_steps: int | None = None,
    distill_steps: int | None = None,
    label_every: int = 1,
    unlabelled_videos: int = 0,
    unlabelled: str | None = None,
    overwrite: bool = False,
    compare: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Run every (row, seed) not done yet and write ``results.json`` / ``results.md`` under ``out``.

    ``data = (train, val, test)`` uses your own COCO-VID files (without a test file the validation
    split is reported, and the table says so); otherwise ``preset`` generates ``synth = (videos,
    frames, size)`` synthetic data and ``test_videos`` test videos. ``label_every = K`` trains on
    1 labelled frame in K per training video, the rest unlabelled (the ``-all-labels`` rows keep every
    label). The archive rows also distil on videos nobody labelled: ``unlabelled_videos`` synthetic
    ones (`synthetic_archive`), or your own archive ``unlabelled`` (``data.unlabelled``). A folder
    keeps its settings (`check_settings`): only rows and seeds can be added to it; ``overwrite``
    deletes what an earlier benchmark wrote there (`clear_benchmark`) first. ``compare``: pairs
    ``(row, control)`` of ``rows`` whose per-seed differences the tables add to `default_pairs`'.
    """
    if label_every < 1:
        raise ConfigError(f"--label-every {label_every}: expected >= 1 (1: every training frame labelled)")
    rows = default_rows(archive=bool(unlabelled_videos or unlabelled)) if rows is None else rows
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise ConfigError(f"--rows: unknown {unknown}; expected any of {', '.join(ROWS)}")
    outside = [f"{a}:{b}" for a, b in compare if a not in rows or b not in rows]
    if outside:
        raise ConfigError(f"--compare {' '.join(outside)}: both rows of a pair must be among --rows {' '.join(rows)}")
    pairs = list(dict.fromkeys([*default_pairs(rows), *compare]))
    if size not in SIZES:
        raise ConfigError(f"--size {size!r}: expected one of {', '.join(SIZES)}")
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    schedule = Schedule(steps, teacher_steps, student_steps, distill_steps)
    early = [r for r in rows if ROWS[r].start == "baseline"]
    if early and not schedule.lineage:
        raise ConfigError(f"--rows {' '.join(early)}: starts from the baseline's weights before its end, which "
                          "needs one lineage of weights (--teacher-steps and --student-steps)")
    if unlabelled_videos < 0 or (unlabelled_videos and data is not None) or (unlabelled and data is None):
        raise ConfigError(f"--unlabelled-videos {unlabelled_videos} / --unlabelled {unlabelled}: an archive of "
                          "synthetic videos (N >= 0) goes with a preset, your own archive with your own data")
    archive_rows = [r for r in rows if uses_archive(r)]
    if archive_rows and not (unlabelled_videos or unlabelled):
        raise ConfigError(f"--rows {' '.join(archive_rows)}: these learn from an archive of unlabelled videos; give "
                          "--unlabelled-videos N (synthetic) or --unlabelled PATH (your own)")
    if test_videos is not None and (test_videos < 1 or data is not None):
        raise ConfigError(f"--test-videos {test_videos}: expected >= 1, and only with a synthetic preset "
                          "(your own data bring their --test file)")
    out = Path(out)
    if overwrite:
        clear_benchmark(out)
    out.mkdir(parents=True, exist_ok=True)
    test_videos = test_videos or default_test_videos(synth[0])
    with folder_lock(out, LOCK_FILE):  # seeds started side by side: one writes the data, the others wait
        check_settings(out, {
            "size": size, "schedule": schedule.settings(), "overrides": list(overrides),
            **({"label_every": label_every} if label_every > 1 else {}),
            **({"unlabelled_videos": unlabelled_videos} if unlabelled_videos else {}),
            **({"unlabelled": str(Path(unlabelled).resolve())} if unlabelled else {}),
            "data": None if data is None else [x and str(Path(x).resolve()) for x in data],
            "synthetic": None if data is not None else {
                "preset": preset or "ultrasound", "videos_frames_size": list(synth), "test_videos": test_videos},
        })
        if data is not None:
            train, val, test = data
            splits = Splits(Path(train), Path(val), Path(test or val), test_is_val=test is None,
                            unlabelled=Path(unlabelled) if unlabelled else None)
            source = f"{train} (checkpoints chosen on {val})" + (f"; archive of unlabelled videos {unlabelled}"
                                                                 if unlabelled else "")
        else:
            splits = synthetic_splits(out, preset or "ultrasound", *synth, test_videos=test_videos,
                                      unlabelled_videos=unlabelled_videos)
            source = (f"synthetic {preset} preset, {synth[0]} videos x {synth[1]} frames at {synth[2]} px "
                      f"(test: {test_videos} other videos"
                      + (f"; archive: {unlabelled_videos} other videos nobody labelled" if unlabelled_videos else "")
                      + ")")
        splits = label_budget(splits, label_every, out / "data-budget")
        if label_every > 1:
            source += (f"; label budget: 1 training frame in {label_every} per video labelled (`data sparsify --every "
                       f"{label_every}`), the rest unlabelled; validation and test fully labelled")
    split_name = "validation split (no test split given)" if splits.test_is_val else "test split"
    header = (f"# v2idetr accuracy benchmark\n\n{source}; {size} configs; {schedule.describe(rows)}; "
              + (f"overrides: `{' '.join(overrides)}`; " if overrides else "")
              + f"numbers on the {split_name}; image-level protocol yona.")
    records: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    paired: list[dict[str, Any]] = []
    for seed in seeds:
        for name in rows:
            print(f"== {name} (seed {seed}) ==", flush=True)
            records.append(
                _run_one(ROWS[name], seed, out, splits, size, schedule, list(overrides), progress)
            )
            table, paired = summarise(records, rows), paired_differences(records, pairs)
            atomic_write_json(out / "results.json", {"header": header, "rows": table, "paired": paired,
                                                     "runs": records}, indent=2)
            atomic_write_text(out / "results.md", format_table(table, header, paired))
    return {"header": header, "rows": table, "paired": paired, "runs": records}
