"""The tables of `v2idetr bench accuracy`: per-row mean and standard deviation over seeds, the share of
the baseline-to-teacher gap each row closes, and paired differences between rows.

Paired, because on a few seeds two rows' spreads overlap while one leads on every seed: the difference
per seed (same data, same start) is what says whether a recipe beats its control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from v2idetr.bench.rows import ROWS
from v2idetr.errors import ConfigError

METRICS = ("AP", "AP50", "AP75", "f1", "AP50_degraded", "AP50_degraded_one_frame", "AP50_one_frame_suffices")
# the share of the baseline-to-teacher gap is reported for these
GAP_METRICS = ("AP50", "AP50_degraded", "AP50_degraded_one_frame", "AP50_one_frame_suffices")
# paired differences (row - control) are reported for these: all frames, and what one frame can take
PAIRED_METRICS = ("AP50", "AP75", "AP50_degraded_one_frame")
IMAGE_CONTROL = "-image-teacher"
# the teacher's student on every label: where the teacher's lead is the clip's, the most a single-frame
# student reaches, so the gap to it (not to the teacher) is what a student can close
SINGLE_FRAME_CEILING = "student-all-labels"


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    kept = [v for v in values if v is not None]
    if not kept:
        return None, None
    return float(np.mean(kept)), float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0


def _over_seeds(values: list[float]) -> dict[str, Any] | None:
    """Mean, standard deviation and how many seeds they rest on; None for no seed."""
    if not values:
        return None
    mean, std = _mean_std(values)
    return {"mean": mean, "std": std, "seeds": len(values)}


def gap_closed(baseline: float | None, teacher: float | None, row: float | None) -> float | None:
    """The share of the baseline-to-teacher gap ``row`` closes; None unless the teacher leads, since
    a ratio over a gap that is not there (or is noise around zero) says nothing."""
    if baseline is None or teacher is None or row is None or teacher <= baseline:
        return None
    return (row - baseline) / (teacher - baseline)


def _gap_of_means(by_seed: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int], top: str,
                  row: str) -> float | None:
    """The AP50 gap from the baseline to ``top`` (the teacher, or another row) that ``row`` closes by
    the mean difference over the seeds that have all three: mean(row - baseline) / mean(top - baseline).
    Unlike the per-seed shares it does not blow up on a seed where ``top`` barely leads; None unless
    ``top`` leads on average."""
    triples = [tuple((by_seed.get((n, seed)) or {}).get("AP50") for n in ("baseline", top, row)) for seed in seeds]
    kept = [t for t in triples if None not in t]
    if not kept:
        return None
    base, teacher, row = (float(np.mean(v)) for v in zip(*kept, strict=True))
    return gap_closed(base, teacher, row)


def summarise(records: list[dict[str, Any]], rows: Sequence[str]) -> dict[str, Any]:
    """Mean and standard deviation over seeds per row; the share of the baseline-to-teacher AP50 gap
    each row closes on all frames and on degraded frames (per seed where the teacher leads, then
    averaged; ``seeds`` in the entry says over how many)."""
    table: dict[str, Any] = {}
    for name in rows:
        mine = [r for r in records if r["row"] == name]
        if not mine:
            continue
        table[name] = {"seeds": sorted(r["seed"] for r in mine),
                       "minutes": float(np.mean([r["minutes"] for r in mine]))}
        for key in METRICS:
            table[name][key] = dict(zip(("mean", "std"), _mean_std([r.get(key) for r in mine]), strict=True))
    by_seed = {(r["row"], r["seed"]): r for r in records}
    for name, entry in table.items():
        for key in GAP_METRICS:
            gaps = []
            for seed in entry["seeds"]:
                base, teach, me = (by_seed.get((n, seed)) or {} for n in ("baseline", "teacher", name))
                gap = gap_closed(base.get(key), teach.get(key), me.get(key))
                if gap is not None:
                    gaps.append(gap)
            entry[f"gap_closed_{key}"] = _over_seeds(gaps)
        entry["gap_closed_of_means_AP50"] = _gap_of_means(by_seed, entry["seeds"], "teacher", name)
        ratios = [me["AP50"] / ceiling["AP50"] for seed in entry["seeds"]
                  if (me := by_seed[(name, seed)]).get("AP50") is not None
                  and (ceiling := by_seed.get(("baseline-all-labels", seed)) or {}).get("AP50")]
        entry["of_all_labels_AP50"] = _over_seeds(ratios)
        entry["of_ceiling_gain_AP50"] = _gap_of_means(by_seed, entry["seeds"], SINGLE_FRAME_CEILING, name)
    return table


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(table: dict[str, Any], header: str, paired: Sequence[dict[str, Any]] = ()) -> str:
    def cell(entry: dict[str, Any] | None, of: int | None = None) -> str:
        if not entry or entry["mean"] is None:
            return "n/a"
        text = f"{entry['mean']:.3f} ± {entry['std']:.3f}"
        return text + (f" ({entry['seeds']} of {of} seeds)" if of is not None and entry["seeds"] < of else "")

    # the share of the single-frame ceiling's gain: a column only when that row was run
    ceiling = any(e.get("of_ceiling_gain_AP50") is not None for e in table.values())
    columns = ["row", "what", "seeds", "AP", "AP50", "AP75", "F1", "AP50 degraded",
               "AP50 degraded, one frame suffices", "AP50, one frame suffices", "gap closed (AP50)",
               "gap closed (AP50, of the means)", "gap closed (AP50 degraded)",
               "gap closed (AP50 degraded, one frame suffices)", "gap closed (AP50, one frame suffices)",
               "of all-labels AP50", *([f"of {SINGLE_FRAME_CEILING}'s gain (AP50, of the means)"] if ceiling else []),
               "train min"]
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, e in table.items():
        gaps = [cell(e[f"gap_closed_{key}"], len(e["seeds"])) for key in GAP_METRICS]
        gaps.insert(1, _share(e.get("gap_closed_of_means_AP50")))
        cells = [name, ROWS[name].description, str(len(e["seeds"])), cell(e["AP"]), cell(e["AP50"]),
                 cell(e["AP75"]), cell(e["f1"]), cell(e["AP50_degraded"]), cell(e["AP50_degraded_one_frame"]),
                 cell(e["AP50_one_frame_suffices"]), *gaps, cell(e.get("of_all_labels_AP50"), len(e["seeds"])),
                 *([_share(e.get("of_ceiling_gain_AP50"))] if ceiling else []), f"{e['minutes']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Gap closed = (row - baseline) / (teacher - baseline) of AP50 on all test frames, on the "
              "degraded ones (every degradation but none), on the degraded ones one frame suffices for, and on "
              "every frame one frame suffices for. One frame does not suffice for the synthetic `hopeless` frames "
              "(the lesion left no trace: only a video model can find it; nor, on data from generator 1.0, for "
              "`distractor` frames, whose look-alike was drawn exactly like a lesion), so the last two are what a "
              "single-frame student can take of the teacher's lead. Per seed, then mean ± standard deviation over "
              "the seeds where the teacher leads the baseline (n/a where it leads on none: there is no gap to close); "
              "of the means = mean(row - baseline) / mean(teacher - baseline) over the seeds, which a seed where the "
              "teacher barely leads does not blow up. "
              "Of all-labels AP50 = row / baseline-all-labels AP50 per seed: how much of what every label would "
              "give a row reaches with the label budget."
              + (f" Of {SINGLE_FRAME_CEILING}'s gain = mean(row - baseline) / mean({SINGLE_FRAME_CEILING} - "
                 "baseline) of AP50 over the seeds: the gap closed towards what the teacher's single-frame student "
                 "reaches with every label, where a teacher's lead that is the clip's puts its own AP50 out of "
                 "reach." if ceiling else "")]
    return "\n".join(lines + format_paired(paired)) + "\n"


def parse_pair(text: str) -> tuple[str, str]:
    """``ROW:CONTROL`` of ``--compare``, both rows of the benchmark."""
    row, sep, control = text.partition(":")
    if not (sep and row in ROWS and control in ROWS):
        raise ConfigError(f"--compare {text!r}: expected ROW:CONTROL, two rows of {', '.join(ROWS)}")
    return row, control


def default_pairs(rows: Sequence[str]) -> list[tuple[str, str]]:
    """Every row beside its image-teacher control when both run (``X`` and ``X-image-teacher``): the same
    recipe with the image baseline as the teacher, which says what the video teacher's clips add."""
    return [(r.removesuffix(IMAGE_CONTROL), r) for r in rows
            if r.endswith(IMAGE_CONTROL) and r.removesuffix(IMAGE_CONTROL) in rows]


def paired_differences(records: list[dict[str, Any]], pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per seed ``row - control`` on `PAIRED_METRICS` over the seeds both have run, then mean and
    standard deviation; ``ahead``: on how many seeds the row is higher; ``spread``: the largest of the
    two rows' standard deviations over those seeds and the differences' own, the yardstick a difference
    must pass to count."""
    by_seed = {(r["row"], r["seed"]): r for r in records}
    result = []
    for row, control in pairs:
        entry: dict[str, Any] = {"row": row, "control": control}
        for key in PAIRED_METRICS:
            both = [(mine[key], theirs[key]) for (name, seed), mine in sorted(by_seed.items()) if name == row
                    and (theirs := by_seed.get((control, seed))) is not None
                    and mine.get(key) is not None and theirs.get(key) is not None]
            diffs = [a - b for a, b in both]
            stats = _over_seeds(diffs)
            entry[key] = None if stats is None else {
                **stats, "ahead": sum(d > 0 for d in diffs),
                "spread": max(stats["std"], *(_mean_std(list(side))[1] or 0.0 for side in zip(*both, strict=True)))}
        result.append(entry)
    return result


def format_paired(paired: Sequence[dict[str, Any]]) -> list[str]:
    """The paired differences as a markdown section (no lines when there are none)."""
    if not paired:
        return []

    def cell(d: dict[str, Any] | None) -> str:
        if d is None:
            return "n/a"
        if d["seeds"] < 2:
            return f"{d['mean']:+.3f} (one seed: no spread)"
        verdict = "beyond" if abs(d["mean"]) > d["spread"] else "inside (no difference)"
        return (f"{d['mean']:+.3f} ± {d['std']:.3f}, higher on {d['ahead']} of {d['seeds']} seeds, "
                f"{verdict} the spread {d['spread']:.3f}")

    lines = ["", "## Paired differences", "",
             "| row - control | AP50 | AP75 | AP50 degraded, one frame suffices |", "|---|---|---|---|"]
    lines += [f"| {p['row']} - {p['control']} | " + " | ".join(cell(p[key]) for key in PAIRED_METRICS) + " |"
              for p in paired]
    return lines + ["", "Per seed the row minus its control (same data, same seeds), then mean ± standard deviation "
                    "over the seeds both have run; the spread is the largest of the two rows' standard deviations "
                    "over those seeds and the differences' own: a difference inside it counts as none, even when the "
                    "row is higher on every seed. Each `X-image-teacher` row is paired with `X`; "
                    "`--compare ROW:CONTROL` adds pairs."]
