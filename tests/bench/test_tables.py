"""`bench accuracy`'s tables: means and spreads over seeds, the gap closed, paired differences."""

from __future__ import annotations

import pytest

from v2idetr.bench.tables import (
    default_pairs,
    format_table,
    gap_closed,
    paired_differences,
    parse_pair,
    summarise,
)
from v2idetr.errors import ConfigError


def rec(row: str, seed: int, ap50: float, degraded: float | None = None) -> dict:
    return {"row": row, "seed": seed, "minutes": 1.0, "AP": ap50 / 2, "AP50": ap50, "AP75": 0.1, "f1": 0.5,
            "AP50_degraded": degraded, "AP50_degraded_one_frame": None if degraded is None else degraded + 0.1}


def test_summary_means_stds_and_gap_closed() -> None:
    records = [rec("baseline", 0, 0.6, 0.2), rec("teacher", 0, 0.8, 0.6), rec("student", 0, 0.7, 0.3),
               rec("baseline", 1, 0.5), rec("teacher", 1, 0.9), rec("student", 1, 0.8)]
    table = summarise(records, ["baseline", "teacher", "student"])
    assert table["student"]["AP50"]["mean"] == pytest.approx(0.75)
    assert table["student"]["AP50"]["std"] == pytest.approx(0.0707107, rel=1e-4)  # sample std over seeds
    assert table["student"]["gap_closed_AP50"]["mean"] == pytest.approx((0.5 + 0.75) / 2)
    assert table["teacher"]["gap_closed_AP50"]["mean"] == pytest.approx(1.0)
    # degraded frames only in seed 0: (0.3 - 0.2) / (0.6 - 0.2), the missing seed is left out, not zero
    assert table["student"]["gap_closed_AP50_degraded"]["mean"] == pytest.approx(0.25)
    assert table["student"]["AP50_degraded"]["mean"] == pytest.approx(0.3)
    assert table["student"]["gap_closed_AP50_degraded_one_frame"]["mean"] == pytest.approx(0.25)
    # a record without a metric (an older version's) counts as missing there, not as an error
    del records[0]["AP50_degraded_one_frame"]
    assert summarise(records, ["student"])["student"]["gap_closed_AP50_degraded_one_frame"] is None
    assert "| 0.250 ± 0.000 (1 of 2 seeds) |" in format_table(table, "# t")
    # a seed where the teacher does not lead has no gap to close: left out, and n/a when no seed is left
    records += [rec("baseline", 2, 0.9), rec("teacher", 2, 0.85), rec("student", 2, 0.7)]
    again = summarise(records, ["baseline", "teacher", "student"])["student"]["gap_closed_AP50"]
    assert again["mean"] == pytest.approx((0.5 + 0.75) / 2) and again["seeds"] == 2
    worse = [rec("baseline", 0, 0.6), rec("teacher", 0, 0.5), rec("student", 0, 0.7)]
    assert summarise(worse, ["student"])["student"]["gap_closed_AP50"] is None
    assert gap_closed(0.6, 0.8, 0.7) == pytest.approx(0.5) and gap_closed(0.6, 0.6, 0.7) is None
    # of the means: mean(row - baseline) / mean(teacher - baseline) over the seeds, not a mean of ratios
    assert table["student"]["gap_closed_of_means_AP50"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))
    tiny_gap = [rec("baseline", 0, 0.6), rec("teacher", 0, 0.61), rec("student", 0, 0.7),
                rec("baseline", 1, 0.5), rec("teacher", 1, 0.9), rec("student", 1, 0.8)]
    entry = summarise(tiny_gap, ["student"])["student"]
    assert entry["gap_closed_AP50"]["mean"] == pytest.approx((10.0 + 0.75) / 2)  # seed 0's share blows up
    assert entry["gap_closed_of_means_AP50"] == pytest.approx(0.4 / 0.41)
    assert "| 5.375 ± 6.541 | 0.976 |" in format_table({"student": entry}, "# t")
    assert summarise(worse, ["student"])["student"]["gap_closed_of_means_AP50"] is None
    # the share of the all-labels ceiling's AP50, per seed
    ceiling = [rec("baseline-all-labels", 0, 0.8), rec("baseline-all-labels", 1, 1.0)]
    shares = summarise(records + ceiling, ["student", "baseline-all-labels"])
    assert shares["student"]["of_all_labels_AP50"]["mean"] == pytest.approx((0.7 / 0.8 + 0.8 / 1.0) / 2)
    assert shares["student"]["of_all_labels_AP50"]["seeds"] == 2  # seed 2 has no ceiling run: left out
    assert shares["baseline-all-labels"]["of_all_labels_AP50"]["mean"] == pytest.approx(1.0)
    assert summarise(records, ["student"])["student"]["of_all_labels_AP50"] is None



def test_paired_differences_per_seed() -> None:
    """Row minus control seed by seed, over the seeds both ran; a lead on every seed that stays inside
    the rows' spread is reported as no difference, and so is one inside the differences' own spread."""
    row, control = PAIR = ("student", "student-init-only")
    records = [rec(row, 0, 0.70, 0.5), rec(row, 1, 0.80, 0.6), rec(row, 2, 0.90),
               rec(control, 0, 0.68, 0.5), rec(control, 1, 0.79, 0.4), rec(control, 3, 0.10)]
    (pair,) = paired_differences(records, [PAIR])
    ap50 = pair["AP50"]
    assert ap50["seeds"] == 2 and ap50["ahead"] == 2  # seeds 2 and 3 ran for one row only: left out
    assert ap50["mean"] == pytest.approx(0.015) and ap50["std"] == pytest.approx(0.00707107, rel=1e-4)
    assert ap50["spread"] == pytest.approx(0.0777817, rel=1e-4)  # the control's spread over seeds 0 and 1
    one_frame = pair["AP50_degraded_one_frame"]
    assert one_frame["mean"] == pytest.approx(0.1) and one_frame["ahead"] == 1
    text = format_table(summarise(records, list(PAIR)), "# t", [pair])
    assert (f"| {row} - {control} | +0.015 ± 0.007, higher on 2 of 2 seeds, inside (no difference) the spread "
            "0.078 |") in text
    # beyond both rows' spreads (0.071) but not the differences' own
    assert "+0.100 ± 0.141, higher on 1 of 2 seeds, inside (no difference) the spread 0.141 |" in text
    apart = paired_differences([rec(row, 0, 0.9), rec(row, 1, 0.91), rec(control, 0, 0.5), rec(control, 1, 0.52)],
                               [PAIR])
    assert "beyond the spread 0.014" in format_table({}, "# t", apart)
    (single,) = paired_differences([rec(row, 0, 0.7), rec(control, 0, 0.6)], [PAIR])
    assert (f"| {row} - {control} | +0.100 (one seed: no spread) | +0.000 (one seed: no spread) | n/a |"
            in format_table({}, "# t", [single]))
    assert paired_differences(records, [(row, "teacher")])[0]["AP50"] is None
    assert "Paired differences" not in format_table({}, "# t")


def test_pairs_named_and_by_default() -> None:
    assert parse_pair("student:baseline") == ("student", "baseline")
    for bad in ("student-baseline", "student:nothing", ":baseline"):
        with pytest.raises(ConfigError, match="expected ROW:CONTROL"):
            parse_pair(bad)
    rows = ["baseline", "student-archive-round2", "student-archive-round2-image-teacher",
            "student-unlabelled-image-teacher"]
    assert default_pairs(rows) == [("student-archive-round2", "student-archive-round2-image-teacher")]


def test_share_of_the_single_frame_ceiling_gain_only_with_that_row() -> None:
    records = [rec("baseline", 0, 0.6), rec("teacher", 0, 0.9), rec("student-all-labels", 0, 0.7),
               rec("student", 0, 0.65), rec("baseline", 1, 0.5), rec("teacher", 1, 0.9),
               rec("student-all-labels", 1, 0.7), rec("student", 1, 0.7)]
    table = summarise(records, ["baseline", "student-all-labels", "student"])
    # mean(row - baseline) / mean(ceiling - baseline): (0.05 + 0.2) / (0.1 + 0.2), not the teacher's gap
    assert table["student"]["of_ceiling_gain_AP50"] == pytest.approx(0.25 / 0.3)
    assert table["student-all-labels"]["of_ceiling_gain_AP50"] == pytest.approx(1.0)
    text = format_table(table, "# t")
    assert "of student-all-labels's gain" in text and "| 0.833 | 1.0 |" in text
    assert text.splitlines()[2].count("|") == text.splitlines()[3].count("|") == text.splitlines()[4].count("|")
    without = summarise([r for r in records if r["row"] != "student-all-labels"], ["baseline", "student"])
    assert without["student"]["of_ceiling_gain_AP50"] is None
    assert "gain" not in format_table(without, "# t")
