"""The study's measures on hand-made score tables whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from study.analysis.measures import bootstrap_ci, reference_gains, subset_measures, summarize, task_gains
from study.analysis.tables import SCORE_COLUMNS

TA = ("task_arithmetic", '{"lambda": "1/k"}')


def rows(method: str, params: str, k: int, subset_id: int, ckpts: list[str], scores: dict[str, float],
         base: str = "b") -> list[dict]:
    cid = f"{method}-{params}-{k}-{subset_id}"
    return [{"cell_id": cid, "base": base, "method": method, "params": params, "k": k, "subset_id": subset_id,
             "checkpoints": json.dumps(ckpts), "task": t, "metric": "acc", "score": s} for t, s in scores.items()]


def table(*groups: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for g in groups for r in g], columns=list(SCORE_COLUMNS))


def study_table(extra: list[list[dict]] = ()) -> pd.DataFrame:
    """Base avg 0.4; singles a 0.5, b 0.4 (ties the base), c 0.6."""
    return table(rows("base", "{}", 0, 0, [], {"t1": 0.5, "t2": 0.3}),
                 rows("single", "{}", 1, 0, ["a"], {"t1": 0.6, "t2": 0.4}),
                 rows("single", "{}", 1, 1, ["b"], {"t1": 0.5, "t2": 0.3}),
                 rows("single", "{}", 1, 2, ["c"], {"t1": 0.7, "t2": 0.5}), *extra)


def test_a_tie_at_the_base_score_is_not_a_win():
    scores = study_table([rows(*TA, 2, 0, ["a", "c"], {"t1": 0.5, "t2": 0.3})])
    m = subset_measures(scores).iloc[0]
    assert m.counted and m.gain == 0.0 and not m.win
    assert summarize(subset_measures(scores), 0).p_beat_base.iloc[0] == 0.0


def test_merge_equal_to_its_best_single_has_relative_gain_exactly_zero():
    scores = study_table([rows(*TA, 2, 0, ["a", "b"], {"t1": 0.6, "t2": 0.4})])
    m = subset_measures(scores).iloc[0]
    assert m.rel_gain_best_single == 0.0
    assert not m.rel_gain_best_single > 0  # not constructive interference
    assert m.win and m.best_single == m.avg


def test_gain_win_and_relative_gain_values():
    scores = study_table([rows(*TA, 2, 0, ["a", "b"], {"t1": 0.6, "t2": 0.4}),
                          rows(*TA, 2, 1, ["a", "c"], {"t1": 0.5, "t2": 0.3}),
                          rows(*TA, 2, 2, ["b", "c"], {"t1": 0.8, "t2": 0.6})])
    per = subset_measures(scores)
    assert per.gain.tolist() == pytest.approx([0.1, 0.0, 0.3])
    assert per.win.tolist() == [True, False, True]
    assert per.rel_gain_best_single.tolist() == pytest.approx([0.0, -1 / 3, 1 / 6])
    s = summarize(per, 3).iloc[0]
    assert s.n_subsets == 3 and s.p_beat_base == pytest.approx(2 / 3)
    assert s.gain_mean == pytest.approx(0.4 / 3) and s.rel_gain_best_single_mean == pytest.approx(-1 / 18)
    assert s.gain_ci_low <= s.gain_mean <= s.gain_ci_high


def test_subsets_missing_a_single_or_a_task_are_dropped_with_a_reason():
    scores = study_table([rows(*TA, 2, 0, ["a", "z"], {"t1": 0.6, "t2": 0.4}),
                          rows(*TA, 2, 1, ["a", "c"], {"t1": 0.6}),
                          rows(*TA, 2, 2, ["b", "c"], {"t1": 0.8, "t2": 0.6})])
    per = subset_measures(scores)
    assert per.counted.tolist() == [False, False, True]
    assert "single z not done" in per.dropped_because.iloc[0]
    assert "task set" in per.dropped_because.iloc[1]
    assert summarize(per, 0).n_subsets.tolist() == [1]
    no_base = subset_measures(scores[scores.method != "base"])
    assert not no_base.counted.any() and (no_base.dropped_because == "base not done").all()


def test_bootstrap_is_seeded_and_collapses_with_one_subset():
    assert bootstrap_ci([0.25], seed=1) == (0.25, 0.25)
    assert bootstrap_ci([0.1, 0.1, 0.1], seed=1) == (0.1, 0.1)
    values = np.array([0.0, 0.1, 0.5, 0.2, -0.3])
    lo, hi = bootstrap_ci(values, seed=42)
    assert (lo, hi) == bootstrap_ci(values, seed=42)
    assert lo < values.mean() < hi and lo >= values.min() and hi <= values.max()


def test_reference_lines_are_the_mean_single_and_mean_best_single_gains():
    scores = study_table()
    ref = reference_gains(scores, {"b": {2: [("a", "b"), ("a", "c"), ("b", "c")], 3: [("a", "b", "c")]}}, 0)
    got = dict(zip(ref.k, ref.gain_mean))
    assert got[1] == pytest.approx((0.1 + 0.0 + 0.2) / 3)
    assert got[2] == pytest.approx((0.1 + 0.2 + 0.2) / 3)
    assert got[3] == pytest.approx(0.2)


def test_task_gains_average_per_task_differences_over_counted_subsets():
    scores = study_table([rows(*TA, 2, 0, ["a", "b"], {"t1": 0.7, "t2": 0.4}),
                          rows(*TA, 2, 1, ["a", "c"], {"t1": 0.5, "t2": 0.2})])
    gains = task_gains(scores, subset_measures(scores)).set_index("task").gain
    assert gains["t1"] == pytest.approx(0.1) and gains["t2"] == pytest.approx(0.0)
