"""What each series cost per cell, so merges, ensembles and fusion are compared at stated compute.

A merge costs a pass over the weights; an output ensemble k forward passes per evaluated token (in its
evaluation time); a fusion cell the teachers' passes over its corpus and the target's training
(``study.fusion.cost``). Read from the records, one row per (base, method, params, k) over done cells.

Columns of ``cost.csv``:

- ``base``, ``method``, ``params``, ``k``: as in ``scores.parquet``.
- ``n_cells``: done cells counted.
- ``build_s_mean``: mean seconds to make the cell's model (merge; loading the k members of an ensemble;
  for fusion the teachers' passes not found in the cache, alignment and fusion, and training).
- ``eval_s_mean``: mean seconds of evaluation; ``total_s_mean``: of both.
- ``teacher_tokens_mean``: fusion: mean tokens the teachers ran over (cached or not); 0 for other series.
- ``train_tokens_mean``: fusion: mean predicted tokens the target trained on; 0 for other series.
- ``train_steps``: fusion: optimizer steps per cell; 0 for other series.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from study.analysis.render import md_table
from study.plan import BASE, SINGLE, Plan
from study.record import Outcome

COST_COLUMNS = ["base", "method", "params", "k", "n_cells", "build_s_mean", "eval_s_mean", "total_s_mean",
                "teacher_tokens_mean", "train_tokens_mean", "train_steps"]


def cost_table(plan: Plan, records: dict[str, Any]) -> pd.DataFrame:
    """``cost.csv``: per series and k, the mean cost of its done cells (each unique cell counted once)."""
    rows, seen = [], set()
    for cell in plan.cells:
        rec = records.get(cell.cell_id)
        key = (cell.cell_id, cell.params_key)
        if cell.method in (BASE, SINGLE) or rec is None or rec.status != Outcome.DONE or key in seen:
            continue
        seen.add(key)
        f = rec.fusion
        rows.append({"base": cell.base, "method": cell.method, "params": cell.params_key, "k": cell.k,
                     "build_s": rec.timing.merge_s, "eval_s": rec.timing.eval_s, "total_s": rec.timing.total_s,
                     "teacher_tokens": f.teacher_tokens if f else 0, "train_tokens": f.train_tokens if f else 0,
                     "train_steps": f.train_steps if f else 0})
    if not rows:
        return pd.DataFrame(columns=COST_COLUMNS)
    frame = pd.DataFrame(rows)
    out = frame.groupby(["base", "method", "params", "k"], sort=True).agg(
        n_cells=("total_s", "size"), build_s_mean=("build_s", "mean"), eval_s_mean=("eval_s", "mean"),
        total_s_mean=("total_s", "mean"), teacher_tokens_mean=("teacher_tokens", "mean"),
        train_tokens_mean=("train_tokens", "mean"), train_steps=("train_steps", "max")).reset_index()
    return out[COST_COLUMNS]


def cost_section(cost: pd.DataFrame, labels: dict[str, str]) -> str:
    """The report's "Cost per cell" section (``cost.csv``)."""
    from study.analysis.sections import labelled

    head = ("## Cost per cell\n\nMean seconds and tokens per done cell (`cost.csv`): *build* is the merge, the "
            "ensemble's loading, or a fusion cell's teacher passes not read from the cache, alignment, fusion and "
            "training; *teacher tokens* are the tokens the k teachers ran over (cached or not) and *train tokens* "
            "the predicted tokens the target trained on. Compare series at these costs: a fusion cell buys its "
            "score with training a merge does not do. Seconds depend on the machine and its load.")
    if cost.empty:
        return head + "\n\nNo merge, ensemble or fusion cell is done yet."
    return f"{head}\n\n{md_table(labelled(cost, labels), digits=3)}"


def with_cost_section(md: str, section: str, before: str = "\n\n## Reference lines") -> str:
    """``report.md`` with the cost section placed after the summary and findings, before the reference lines
    (at the end when that heading is absent)."""
    if before in md:
        return md.replace(before, f"\n\n{section}{before}", 1)
    return f"{md.rstrip()}\n\n{section}\n"
