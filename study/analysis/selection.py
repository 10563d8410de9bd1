"""Selection on validation (``selection:`` in a sweep): the grid point a study would pick without seeing test.

Reading the best test score over a grid reports the maximum of noisy estimates, which is optimistic. A selection
sweep scores each cell on a validation split too (``study.validation``); here, per (base, method, k), the grid
point with the best validation measure is *selected* and reported on test, beside the *oracle*, the grid point
with the best test measure. Their difference (``gap``) is what picking on test would have overstated.

The measure is ``avg`` (``selection.measure``): the mean over the grid point's counted subsets (the subsets
``summary.csv`` counts: merge, base and singles done on the same tasks) of avg(merge), the unweighted mean over
benchmarks, on that split. All grid points of a (base, method, k) merge the same drawn subsets, so ranking by
avg ranks by gain over the base as well. Ties go to the grid point written first in the sweep. A grid point
whose counted subsets lack a validation score cannot be selected. A method with one grid point selects it
(``gap`` 0).

Columns of ``selection.csv`` (one row per (base, method, k) with a counted subset; ``SELECTION_COLUMNS``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from study.analysis.measures import CELL_KEY, cell_averages
from study.analysis.render import md_table
from study.analysis.style import series_key, series_label
from study.analysis.tables import scores_table
from study.plan import BASE, ENSEMBLE, SINGLE, Plan
from study.record import VALIDATION, Record

SELECTION_COLUMNS: dict[str, str] = {
    "base": "base name", "method": "merge method", "k": "subset size",
    "grid_points": "grid points of the method with a counted subset at this k",
    "selected_params": "grid point with the highest val_avg (first in the sweep on a tie)",
    "selected_val_avg": "its mean over counted subsets of avg(merge) on the validation split",
    "selected_test_avg": "its mean over counted subsets of avg(merge) on the test split",
    "selected_gain_mean": "its gain_mean on test (summary.csv)",
    "selected_gain_ci_low": "its gain_ci_low (summary.csv: seeded 95% bootstrap over subsets)",
    "selected_gain_ci_high": "its gain_ci_high (summary.csv)",
    "oracle_params": "grid point with the highest test avg (first in the sweep on a tie)",
    "oracle_val_avg": "its validation avg", "oracle_test_avg": "its test avg",
    "oracle_gain_mean": "its gain_mean on test (summary.csv)",
    "oracle_gain_ci_low": "its gain_ci_low (summary.csv)", "oracle_gain_ci_high": "its gain_ci_high (summary.csv)",
    "gap": "oracle_test_avg - selected_test_avg (>= 0): what choosing on test overstates",
    "n_subsets": "counted subsets of the selected grid point",
}


def grid_means(plan: Plan, records: dict[str, Record | None], per_subset: pd.DataFrame) -> pd.DataFrame:
    """Per (base, method, params, k) of a merge method: ``val_avg`` and ``test_avg``, means over the counted
    subsets (``per_subset.counted``) of avg(merge) on each split, ``n_subsets``, and ``order``, the grid
    point's place in the sweep."""
    counted = per_subset[per_subset.counted & ~per_subset.method.isin([BASE, SINGLE, ENSEMBLE])]
    val = cell_averages(scores_table(plan, records, VALIDATION)).rename(columns={"avg": "val_avg"})
    rows = counted[[*CELL_KEY, "avg"]].merge(val[[*CELL_KEY, "val_avg"]], on=CELL_KEY, how="left")
    out = rows.groupby(["base", "method", "params", "k"], sort=False).agg(
        val_avg=("val_avg", lambda v: v.mean(skipna=False)), test_avg=("avg", "mean"),
        n_subsets=("avg", "size")).reset_index()
    order: dict[tuple[str, str], int] = {}
    for cell in plan.cells:
        order.setdefault((cell.method, cell.params_key), len(order))
    out["order"] = [order.get((m, p), len(order)) for m, p in zip(out.method, out.params)]
    return out


def selection_table(plan: Plan, records: dict[str, Record | None], per_subset: pd.DataFrame,
                    summary: pd.DataFrame) -> pd.DataFrame:
    """``selection.csv``: per (base, method, k), the grid point picked on validation and the oracle on test."""
    means = grid_means(plan, records, per_subset)
    gains = {(r.base, r.method, r.params, int(r.k)): r for r in summary.itertuples(index=False)}
    rows = []
    for (base, method, k), g in means.groupby(["base", "method", "k"], sort=True):
        g = g.sort_values("order", kind="stable")
        oracle = g.loc[g.test_avg.idxmax()]
        valid = g[g.val_avg.notna()]
        picked = valid.loc[valid.val_avg.idxmax()] if not valid.empty else None
        row: dict[str, Any] = {"base": base, "method": method, "k": int(k), "grid_points": len(g)}
        for role, point in (("selected", picked), ("oracle", oracle)):
            s = None if point is None else gains.get((base, method, point.params, int(k)))
            row.update({f"{role}_params": None if point is None else point.params,
                        f"{role}_test_avg": np.nan if point is None else point.test_avg,
                        f"{role}_gain_mean": np.nan if s is None else s.gain_mean,
                        f"{role}_gain_ci_low": np.nan if s is None else s.gain_ci_low,
                        f"{role}_gain_ci_high": np.nan if s is None else s.gain_ci_high})
            row[f"{role}_val_avg"] = np.nan if point is None else point.val_avg
        row["gap"] = np.nan if picked is None else oracle.test_avg - picked.test_avg
        row["n_subsets"] = 0 if picked is None else int(picked.n_subsets)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SELECTION_COLUMNS))


def selection_section(table: pd.DataFrame, labels: dict[str, str], tasks: list[str]) -> str:
    """The report's section: what was selected on which validation tasks (their names as the records key them;
    identities are in the stored plan), the pick on test beside the oracle."""
    view = pd.DataFrame({
        "base": table.base, "k": table.k,
        "method": [labels.get(series_key(m, p), m) if isinstance(p, str) else m
                   for m, p in zip(table.method, table.selected_params)],
        "grid": table.grid_points,
        "selected (on validation)": [series_label(m, p) if isinstance(p, str) else "none"
                                     for m, p in zip(table.method, table.selected_params)],
        "val avg": table.selected_val_avg, "test avg": table.selected_test_avg,
        "test gain [95% CI]": [_gain(r, "selected") for r in table.itertuples()],
        "oracle (on test)": [series_label(m, p) for m, p in zip(table.method, table.oracle_params)],
        "oracle test avg": table.oracle_test_avg, "gap": table.gap})
    split = ", ".join(f"`{t}`" for t in tasks) or "none"
    contract = md_table(pd.DataFrame(list(SELECTION_COLUMNS.items()), columns=["column", "meaning"]))
    return (f"## Selection on validation\n\nPer (base, method, k), the grid point with the highest mean validation "
            f"avg over counted subsets is selected and reported on test, beside the oracle, the grid point with "
            f"the highest test avg; `gap` = oracle test avg - selected test avg is how much reading the best test "
            f"score overstates what a study that chose on validation would report. Gains and intervals are "
            f"`summary.csv`'s. Validation tasks: {split}.\n\n{md_table(view)}\n\n### selection.csv\n\n{contract}")


def _gain(row: Any, role: str) -> str:
    mean, lo, hi = (getattr(row, f"{role}_gain_{x}") for x in ("mean", "ci_low", "ci_high"))
    return "n/a" if pd.isna(mean) else f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
