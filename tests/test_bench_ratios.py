"""The bench's ratio of alternated runs (bench.common.paired_ratio): pure logic, so a unit test.

A wrong statistic here once put a "met" on docs/benchmarks.md for a row whose every pair but one
missed (bench/notes.md, the 04:09 run)."""

from bench.common import paired_ratio


def test_the_ratio_is_the_median_of_the_pairs_not_the_ratio_of_the_medians():
    # The 04:09 upload row: stack runs against the raw runs alternated with them.
    stack, raw = [32.63, 44.65, 42.05], [50.65, 52.08, 60.78]
    assert paired_ratio(stack, raw) == 0.69
    assert round(sorted(stack)[1] / sorted(raw)[1], 2) == 0.81  # what the page used to print


def test_a_drift_shared_by_each_pair_cancels():
    raw = [40.0, 60.0, 80.0]
    assert paired_ratio([0.75 * r for r in raw], raw) == 0.75


def test_unpaired_or_empty_runs_give_none():
    assert paired_ratio([], []) is None
    assert paired_ratio([1.0, 2.0], [1.0]) is None
    assert paired_ratio([1.0], [0.0]) is None
