"""The tidy scores table: one row per (plan cell, task) of every done cell, rebuilt from the store.

It is the single source every measure, figure and table of the report is computed from, so anyone can check
the report from ``scores.parquet`` alone. Rows follow ``plan.cells``, not the store's unique records: two grid
points that resolve to the same parameters at some k (``lambda: [0.5, "1/k"]`` at k = 2) share one record and
appear twice here, once under each grid point, because each curve contains that point.

Columns of ``scores.parquet``:

- ``cell_id``: the cell's content hash (its record in the store).
- ``base``: the base's name in the sweep.
- ``method``: ``base`` (the base alone, k = 0), ``single`` (one checkpoint, k = 1), a merge method's registry
  name, or ``ensemble`` (the output ensemble of a subset).
- ``params``: the grid point as written in the sweep, ``json.dumps(params, sort_keys=True)`` (``"1/k"`` stays
  unresolved, so one curve has one key); ``"{}"`` for base, single and ensemble cells.
- ``k``: number of checkpoints (0 base, 1 single).
- ``subset_id``: index of the subset among the (base, k) draws; for singles, the checkpoint's index.
- ``checkpoints``: JSON list of the checkpoint labels in the cell (``[]`` for the base).
- ``task``: the lm-eval task name as lm-eval reports it (a leaf task, or a top-level group's own score).
- ``benchmark``: the entry of ``evaluation.tasks`` the row counts under: the task itself, or the top-level group
  whose leaf it is. avg(cell) is the mean over the rows with ``task == benchmark`` (one per benchmark, a group
  scored by lm-eval's own aggregate of its leaves); a group's leaf rows are kept for per-task reading.
- ``metric``: the task's primary metric (``acc`` for multiple choice, ``exact_match`` for generation).
- ``score``: that metric's value.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from study.plan import Cell, Plan
from study.record import TEST, Outcome, Record
from study.store import Store

SCORE_COLUMNS: dict[str, str] = {
    "cell_id": "content hash of the cell (its record in the store)",
    "base": "base name in the sweep",
    "method": "base (k = 0), single (k = 1), a merge method, or ensemble",
    "params": "grid point as written, json.dumps(params, sort_keys=True); '{}' for base/single/ensemble",
    "k": "number of checkpoints (0 base, 1 single)",
    "subset_id": "index of the subset among the (base, k) draws; a single's checkpoint index",
    "checkpoints": "JSON list of the checkpoint labels in the cell",
    "task": "lm-eval task name",
    "benchmark": "the evaluation.tasks entry the row counts under (the task, or its top-level group)",
    "metric": "the task's primary metric (acc, exact_match, ...)",
    "score": "the primary metric's value",
}

CELL_COLUMNS = ["cell_id", "base", "method", "params", "k", "subset_id", "checkpoints"]


def cell_row(cell: Cell) -> dict[str, Any]:
    """The identifying columns shared by every table that has one row per plan cell."""
    return {"cell_id": cell.cell_id, "base": cell.base, "method": cell.method, "params": cell.params_key,
            "k": cell.k, "subset_id": cell.subset_id, "checkpoints": json.dumps(list(cell.checkpoints))}


def load_records(plan: Plan, store: Store) -> dict[str, Record | None]:
    """Each planned cell's record (None when the store has none), read once per unique cell."""
    return {cid: store.get(cid) for cid in plan.by_id()}


def scores_table(plan: Plan, records: dict[str, Record | None], split: str = TEST) -> pd.DataFrame:
    """The rows of ``scores.parquet``, in plan order then task order as recorded: the test scores. With
    ``split=VALIDATION``, the same columns for a selection sweep's validation scores (``study.analysis.selection``;
    never written to ``scores.parquet``, so every measure and figure reads test scores only)."""
    rows = []
    for cell in plan.cells:
        rec = records.get(cell.cell_id)
        if rec is None or rec.status != Outcome.DONE:
            continue
        ident = cell_row(cell)
        for task, entry in rec.split_scores(split).items():
            rows.append({**ident, "task": task, "benchmark": entry.get("benchmark", task), "metric": entry["metric"],
                         "score": float(entry["score"])})
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    return frame.astype({"k": "int64", "subset_id": "int64", "score": "float64"})


def outcomes_table(plan: Plan, records: dict[str, Record | None]) -> pd.DataFrame:
    """One row per plan cell: its status (``pending`` when never run), error line and wall time."""
    rows = []
    for cell in plan.cells:
        rec = records.get(cell.cell_id)
        rows.append({**cell_row(cell), "label": cell.method_label or cell.method,
                     "status": str(Outcome.PENDING if rec is None else rec.status),
                     "error": "" if rec is None else rec.message,
                     "total_s": None if rec is None else rec.timing.total_s})
    return pd.DataFrame(rows, columns=[*CELL_COLUMNS, "label", "status", "error", "total_s"])
