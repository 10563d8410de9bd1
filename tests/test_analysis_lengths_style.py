"""The L2S relative length (a mean of per-task ratios) and the figure styles' unique markers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from study.analysis.lengths import AVG_TASK, STATS, cell_length_stats, length_table
from study.analysis.style import DASHED, ENSEMBLE_STYLE, series_key, series_styles
from study.analysis.tables import CELL_COLUMNS


def per_cell(method: str, k: int, ckpt: str, tokens: dict[str, float]) -> list[dict]:
    return [{"cell_id": f"{method}{ckpt}", "base": "b", "method": method, "params": "{}", "k": k, "subset_id": 0,
             "checkpoints": json.dumps([ckpt] if ckpt else []), "task": t, "n_samples": 10, "mean_tokens": m,
             "median_tokens": m, "p90_tokens": m, "truncation_rate": 0.0} for t, m in tokens.items()]


def test_avg_relative_length_is_the_mean_of_per_task_ratios_not_a_ratio_of_sums():
    frame = pd.DataFrame(per_cell("base", 0, "", {"short": 10.0, "long": 100.0})
                         + per_cell("single", 1, "x", {"short": 40.0, "long": 200.0})
                         + per_cell("ties", 2, "", {"short": 5.0, "long": 100.0}),
                         columns=[*CELL_COLUMNS, "task", "n_samples", *STATS])
    table, longest = length_table(frame)
    avg = table[(table.method == "ties") & (table.task == AVG_TASK)].iloc[0]
    assert avg.rel_length_vs_base == pytest.approx((0.5 + 1.0) / 2 - 1)  # -0.25, whereas sums give -0.045
    assert avg.rel_length_vs_longest_single == pytest.approx((5 / 40 + 100 / 200) / 2 - 1)
    assert longest == {"b": "x"}
    assert avg.mean_tokens == pytest.approx(52.5) and avg.n_samples == 20


def test_cell_statistics_and_truncation_at_max_gen_toks():
    samples = [{"task": "g", "n_tokens": n} for n in (1, 2, 3, 4, 10)] + [{"task": "mc", "choice": 0}]
    stats = cell_length_stats(samples, max_gen_toks=4)
    assert set(stats) == {"g"}
    g = stats["g"]
    assert g["mean_tokens"] == 4.0 and g["median_tokens"] == 3.0 and g["truncation_rate"] == 0.4
    assert g["p90_tokens"] == pytest.approx(7.6)


def test_every_merge_series_has_a_unique_marker_and_colour_line_style_pair_and_never_the_reference_dash():
    """Line styles say the family now (tests/test_figures.py checks them); within 10 series every marker and
    every (colour, line style) pair is still unique."""
    keys = [series_key(m, json.dumps({"lambda": i})) for i, m in enumerate(
        ["task_arithmetic", "ties", "model_stock", "tsv_merge", "iso_c", "subspace_boosting", "dare_ties",
         "breadcrumbs", "linear", "slerp"])]
    styles = series_styles(keys + [series_key("ensemble", "{}")])
    merges = [styles[k] for k in keys]
    assert len({s.marker for s in merges}) == len(keys)
    assert len({(s.color, str(s.linestyle)) for s in merges}) == len(keys)
    assert all(s.linestyle != DASHED for s in merges)
    assert styles[series_key("ensemble", "{}")] == ENSEMBLE_STYLE and ENSEMBLE_STYLE.linestyle == DASHED
    assert series_styles(list(reversed(keys))) == series_styles(keys)  # same look whatever the order
