"""Figures a reviewer accepts: panels take at least 60% of every figure, 12 series stay distinguishable, one
panel per base in a grid, and every figure is written as PNG, PDF and SVG.

The figures are drawn from synthetic tables (``synthetic_tables``) shaped like the report's: up to six bases,
twelve merge series from every family plus the ensemble, long per-tensor labels, so a legend or a label
column that grows with the series shows up here."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.analysis import curves
from study.analysis.layout import grid_shape, plot_area_fraction
from study.analysis.lengths import AVG_TASK
from study.analysis.style import (DASHED, FAMILY_OF, OTHER, apply_theme, compact_value, save_figure, series_key,
                                  series_label, series_styles)
from study.methods.catalog import BUILTIN

SERIES = [("task_arithmetic", {"lambda": "1/k"}), ("task_arithmetic", {"lambda": 1.0}),
          ("ties", {"density": {"gradient": [0.9, 0.4]}, "lambda": 1.0}), ("ties", {"density": 0.2}),
          ("dare_ties", {"density": 0.7}), ("della", {}), ("tsv_merge", {"alpha": 1.0}), ("iso_c", {}),
          ("subspace_boosting", {"beta": 0.2}), ("karcher", {}), ("regmean", {}), ("fisher", {})]
TASKS = ["zoo_add", "zoo_capital_mc", "zoo_colour_mc", "zoo_count_mc", "zoo_first", "zoo_last", "zoo_max",
         "zoo_next", "zoo_sub_mc"]
KS = [2, 3, 4, 6]


def synthetic_tables(n_bases: int, series: list[tuple[str, dict]] = SERIES) -> dict[str, pd.DataFrame]:
    """summary, reference, task gains, lengths and paired tables for ``n_bases`` bases, seeded."""
    rng = np.random.default_rng(n_bases)
    bases = [f"base-{i}" for i in range(n_bases)]
    keys = [(m, json.dumps(p, sort_keys=True)) for m, p in series] + [("ensemble", "{}")]
    summary, reference, gains, lengths, paired = [], [], [], [], []
    for b in bases:
        for k in KS:
            for m, p in keys:
                g = rng.normal(-0.1, 0.1)
                summary.append({"base": b, "method": m, "params": p, "k": k, "gain_mean": g, "gain_ci_low": g - 0.05,
                                "gain_ci_high": g + 0.05, "p_beat_base": rng.uniform(), "p_beat_base_ci_low": 0.0,
                                "p_beat_base_ci_high": 1.0, "rel_gain_best_single_mean": g,
                                "rel_gain_best_single_ci_low": g - 0.1, "rel_gain_best_single_ci_high": g + 0.1,
                                "normalised_mean": 1 + g, "normalised_ci_low": 0.9 + g, "normalised_ci_high": 1.1 + g})
                lengths.append({"base": b, "method": m, "params": p, "k": k, "task": AVG_TASK,
                                "mean_tokens": rng.uniform(5, 40)})
                gains += [{"base": b, "method": m, "params": p, "k": k, "task": t, "gain": rng.normal(0, 0.2)}
                          for t in TASKS]
            for (ma, pa), (mb, pb) in combinations(keys, 2):
                paired.append({"base": b, "k": k, "method_a": ma, "params_a": pa, "method_b": mb, "params_b": pb,
                               "n_subsets": 8, "mean_diff": rng.normal(0, 0.1), "significant": rng.uniform() < 0.3})
        for k in [1, *KS]:
            reference.append({"base": b, "k": k, "reference": "single" if k == 1 else "best_single", "n": 4,
                              "gain_mean": -0.2, "gain_ci_low": -0.25, "gain_ci_high": -0.15,
                              "base_rel_gain_best_single": 0.3, "base_normalised": 1.2})
        lengths += [{"base": b, "method": "base", "params": "{}", "k": 0, "task": AVG_TASK, "mean_tokens": 20.0},
                    {"base": b, "method": "single", "params": "{}", "k": 1, "task": AVG_TASK, "mean_tokens": 25.0}]
    return {"summary": pd.DataFrame(summary), "reference": pd.DataFrame(reference), "gains": pd.DataFrame(gains),
            "lengths": pd.DataFrame(lengths), "paired": pd.DataFrame(paired)}


def figures(tables: dict[str, pd.DataFrame]) -> dict[str, object]:
    """Every figure of the report (``report.FIGURES``' stems) drawn from ``tables``."""
    s, r, labels = tables["summary"], tables["reference"], {}
    return {"gain_curves": lambda: curves.gain_curves(s, r, labels),
            "p_beat_base": lambda: curves.p_beat_curves(s, labels),
            "rel_gain_best_single": lambda: curves.rel_gain_curves(s, labels, r),
            "task_heatmap": lambda: curves.task_heatmap(tables["gains"], labels),
            "length_curves": lambda: curves.length_curves(tables["lengths"], labels),
            "normalised_curves": lambda: curves.normalised_curves(s, r, labels),
            "paired_matrix": lambda: curves.paired_matrix(tables["paired"], labels)}


@pytest.mark.parametrize("n_bases", [1, 4])
@pytest.mark.parametrize("stem", list(figures(synthetic_tables(1))))
def test_panels_take_at_least_60_percent_of_every_figure(stem, n_bases):
    import matplotlib.pyplot as plt

    apply_theme()
    fig = figures(synthetic_tables(n_bases))[stem]()
    fraction = plot_area_fraction(fig)
    plt.close(fig)
    assert fraction >= 0.6, f"{stem} with {n_bases} base(s): panels take {fraction:.2f} of the figure"


def test_a_figure_of_few_series_fills_its_figure_too():
    import matplotlib.pyplot as plt

    apply_theme()
    fig = curves.gain_curves(*[synthetic_tables(2, SERIES[:2])[t] for t in ("summary", "reference")], {})
    assert plot_area_fraction(fig) >= 0.6
    plt.close(fig)


def test_twelve_series_have_distinct_colour_and_line_style_pairs_and_markers():
    keys = [series_key(m, json.dumps(p, sort_keys=True)) for m, p in SERIES]
    assert len(keys) == 12
    styles = series_styles(keys + [series_key("ensemble", "{}")])
    merges = [styles[k] for k in keys]
    assert len({(s.color, str(s.linestyle)) for s in merges}) == 12
    assert len({s.marker for s in merges}) == 12
    assert all(s.linestyle != DASHED for s in merges)  # dashed is the references'
    assert styles[series_key("ensemble", "{}")].linestyle == DASHED
    one_family = [series_key("ties", json.dumps({"density": d / 20})) for d in range(1, 15)]
    same = series_styles(one_family)
    assert len({(s.color, str(s.linestyle)) for s in same.values()}) == 14  # 14 of one family still distinct
    task_vector = [styles[k] for k in keys[:6]]  # task_arithmetic, ties, dare_ties, della: one family, one style
    assert len({str(s.linestyle) for s in task_vector}) == 1 and task_vector[0].linestyle == "-"
    assert len({str(s.linestyle) for s in merges[6:9]}) == 1  # tsv_merge, iso_c, subspace_boosting
    assert merges[6].linestyle != task_vector[0].linestyle
    assert series_styles(list(reversed(keys))) == series_styles(keys)  # same look whatever the order


def test_colour_and_marker_pairs_stay_distinct_past_fourteen_series():
    """The zoo study draws 15 series: with marker i mod 14, series 0 and 14 shared colour and marker."""
    methods = ["task_arithmetic", "ties", "dare_ties", "della", "tsv_merge", "iso_c", "karcher", "regmean", "aim"]
    keys = [series_key(m, json.dumps({"x": i})) for m in methods for i in range(5)]
    styles = series_styles(keys)
    assert len({(s.color, s.marker) for s in styles.values()}) == len(keys) == 45


def test_every_builtin_method_has_a_family():
    assert not [m for m in BUILTIN if FAMILY_OF.get(m, OTHER) == OTHER]


def test_grid_shapes_for_one_to_six_bases():
    assert [grid_shape(n) for n in range(1, 7)] == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3)]


@pytest.mark.parametrize("n", [1, 4, 5])
def test_one_panel_per_base_in_a_grid(n):
    import matplotlib.pyplot as plt

    apply_theme()
    tables = synthetic_tables(n)
    fig = curves.gain_curves(tables["summary"], tables["reference"], {})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"base-{i}" for i in range(n)]
    assert len({ax.get_ylim() for ax in panels}) == 1  # gains share one y axis across bases
    plt.close(fig)


def test_per_tensor_forms_are_written_compactly():
    assert compact_value({"gradient": [0.9, 0.4]}) == "grad[0.9→0.4]"
    assert compact_value({"filters": [{"filter": "self_attn", "value": 0.3}, {"filter": "mlp", "value": [0.9, 0.4]},
                                      {"value": 0.5}]}) == "[self_attn:0.3, mlp:0.9→0.4, *:0.5]"
    params = json.dumps({"density": [0.5, {"gradient": [0.9, 0.4]}], "lambda": "1/k"}, sort_keys=True)
    assert series_label("ties", params) == "ties (density=[0.5, grad[0.9→0.4]], lambda=1/k)"
    assert series_label("TIES", "{}") == "TIES"


def test_every_figure_is_written_as_png_pdf_and_svg_identically_twice(tmp_path: Path):
    import matplotlib.pyplot as plt

    apply_theme()
    tables = synthetic_tables(2, SERIES[:3])
    first = save_figure(curves.gain_curves(tables["summary"], tables["reference"], {}), tmp_path / "a", "gain")
    second = save_figure(curves.gain_curves(tables["summary"], tables["reference"], {}), tmp_path / "b", "gain")
    assert [p.suffix for p in first] == [".png", ".pdf", ".svg"]
    for a, b in zip(first, second):
        assert a.stat().st_size > 0 and a.read_bytes() == b.read_bytes(), a.name
    assert b"<svg" in first[2].read_bytes()[:500]
    plt.close("all")
