"""Response lengths of generation tasks (the long-to-short study's table, arXiv 2503.20641).

Token counts are the ``n_tokens`` stored with each generated sample: the response's length under the base's
tokenizer without special tokens, counted by ``study.evaluate`` when the cell ran. ``recount_tokens`` and
``check_token_counts`` redo that count from the stored text, so the table can be checked without
regenerating. A response is truncated when it has at least ``max_gen_toks`` tokens: it hit the generation
budget rather than a stop sequence or EOS (the same rule ``study.evaluate`` records).

Statistics are computed per cell and task, then averaged over the cells of a (base, method, params, k) group
(the subsets; the checkpoints for k = 1). Every done cell with samples counts; no base or single is needed.

Columns of ``lengths.csv`` (one row per (base, method, params, k, task), generation tasks only, base rows k = 0
and single rows k = 1 included):

- ``base``, ``method``, ``params``, ``k``, ``task``: as in ``scores.parquet``; ``task = "Avg."`` is the row
  over the group's generation tasks.
- ``n_cells``: cells averaged; ``n_samples``: generated samples in those cells (summed).
- ``mean_tokens``, ``median_tokens``, ``p90_tokens``: per-cell mean, median and 90th percentile (linear) of the
  token counts, averaged over cells; on the ``Avg.`` row, averaged over tasks.
- ``truncation_rate``: per-cell share of responses with ``n_tokens >= max_gen_toks``, averaged over cells.
- ``rel_length_vs_base``: ``mean_tokens / base mean_tokens - 1`` for the task; on the ``Avg.`` row the mean over
  tasks of the per-task ratios minus one (the L2S "Avg.", not a ratio of summed lengths).
- ``rel_length_vs_longest_single``: the same against the single checkpoint with the largest mean over tasks of
  ``mean_tokens`` (named in report.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.tables import CELL_COLUMNS, cell_row
from study.plan import BASE, SINGLE, Plan
from study.record import VALIDATION, Outcome, Record
from study.store import Store

AVG_TASK = "Avg."
GROUP = ["base", "method", "params", "k"]
STATS = ["mean_tokens", "median_tokens", "p90_tokens", "truncation_rate"]
LENGTH_COLUMNS: dict[str, str] = {
    "base": "base name", "method": "base, single, merge method or ensemble", "params": "grid point (JSON)",
    "k": "subset size (0 base, 1 single)", "task": "generation task, or 'Avg.' over them",
    "n_cells": "cells averaged", "n_samples": "generated samples in those cells",
    "mean_tokens": "mean tokens per response (per cell, then mean over cells)",
    "median_tokens": "median tokens per response (per cell, then mean over cells)",
    "p90_tokens": "90th percentile of tokens (per cell, then mean over cells)",
    "truncation_rate": "share of responses with n_tokens >= max_gen_toks",
    "rel_length_vs_base": "mean_tokens / base mean_tokens - 1 (Avg.: mean of per-task ratios - 1)",
    "rel_length_vs_longest_single": "as rel_length_vs_base, against the longest-answering single checkpoint",
}


def cell_length_stats(samples: list[dict[str, Any]], max_gen_toks: int) -> dict[str, dict[str, float]]:
    """Per generation task of one cell: sample count, mean/median/p90 tokens and truncation rate."""
    by_task: dict[str, list[int]] = {}
    for s in samples:
        if "n_tokens" in s:
            by_task.setdefault(s["task"], []).append(int(s["n_tokens"]))
    out = {}
    for task, counts in by_task.items():
        x = np.asarray(counts, dtype=float)
        out[task] = {"n_samples": len(x), "mean_tokens": float(x.mean()), "median_tokens": float(np.median(x)),
                     "p90_tokens": float(np.percentile(x, 90)), "truncation_rate": float((x >= max_gen_toks).mean())}
    return out


def per_cell_lengths(plan: Plan, records: dict[str, Record | None], store: Store,
                     max_gen_toks: int) -> pd.DataFrame:
    """One row per (plan cell, generation task) of every done cell whose samples are stored."""
    stats: dict[str, dict[str, dict[str, float]]] = {}
    rows = []
    for cell in plan.cells:
        rec = records.get(cell.cell_id)
        if rec is None or rec.status != Outcome.DONE or rec.samples_sha256 is None:
            continue
        if cell.cell_id not in stats:
            stats[cell.cell_id] = cell_length_stats(store.samples(cell.cell_id), max_gen_toks)
        validation = rec.split_scores(VALIDATION)  # a selection sweep's validation tasks: not what is reported
        for task, values in stats[cell.cell_id].items():
            if task not in validation:
                rows.append({**cell_row(cell), "task": task, **values})
    return pd.DataFrame(rows, columns=[*CELL_COLUMNS, "task", "n_samples", *STATS])


def longest_single(per_cell: pd.DataFrame, base: str) -> str | None:
    """The single checkpoint of ``base`` whose mean over generation tasks of mean tokens is the largest."""
    singles = per_cell[(per_cell.base == base) & (per_cell.method == SINGLE)]
    if singles.empty:
        return None
    means = singles.groupby("checkpoints")["mean_tokens"].mean()
    return json.loads(means.idxmax())[0]


def length_table(per_cell: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str | None]]:
    """``lengths.csv`` from the per-cell rows, and the longest-answering single checkpoint of each base."""
    if per_cell.empty:
        return pd.DataFrame(columns=list(LENGTH_COLUMNS)), {}
    grouped = per_cell.groupby([*GROUP, "task"], sort=True)
    table = grouped[STATS].mean()
    table.insert(0, "n_samples", grouped["n_samples"].sum())
    table.insert(0, "n_cells", grouped.size())
    table = table.reset_index()
    longest = {b: longest_single(per_cell, b) for b in table.base.unique()}
    for column, ref in (("rel_length_vs_base", _base_lengths(table)),
                        ("rel_length_vs_longest_single", _single_lengths(per_cell, longest))):
        merged = table.merge(ref, on=["base", "task"], how="left")
        table[column] = (merged.mean_tokens / merged.ref_tokens).values - 1
    avg = _avg_rows(table)
    out = pd.concat([table, avg], ignore_index=True) if not avg.empty else table
    order = {AVG_TASK: 1}
    out = out.sort_values([*GROUP, "task"], key=lambda s: s.map(order).fillna(0) if s.name == "task" else s,
                          kind="stable")
    return out[list(LENGTH_COLUMNS)].reset_index(drop=True), longest


def _base_lengths(table: pd.DataFrame) -> pd.DataFrame:
    base = table[table.method == BASE]
    return base[["base", "task", "mean_tokens"]].rename(columns={"mean_tokens": "ref_tokens"})


def _single_lengths(per_cell: pd.DataFrame, longest: dict[str, str | None]) -> pd.DataFrame:
    rows = []
    for base, label in longest.items():
        if label is None:
            continue
        one = per_cell[(per_cell.base == base) & (per_cell.method == SINGLE)
                       & (per_cell.checkpoints == json.dumps([label]))]
        rows.extend({"base": base, "task": t, "ref_tokens": m} for t, m in zip(one.task, one.mean_tokens))
    return pd.DataFrame(rows, columns=["base", "task", "ref_tokens"])


def _avg_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The L2S "Avg." row: means over tasks; relative lengths as the mean of per-task ratios minus one."""
    rows = []
    for key, g in table.groupby(GROUP, sort=True):
        row = {**dict(zip(GROUP, key)), "task": AVG_TASK, "n_cells": int(g.n_cells.max()),
               "n_samples": int(g.n_samples.sum())}
        row.update({s: g[s].mean() for s in STATS})
        for column in ("rel_length_vs_base", "rel_length_vs_longest_single"):
            ratios = g[column] + 1
            row[column] = ratios.mean() - 1 if ratios.notna().all() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def recount_tokens(responses: list[str], tokenizer: Any) -> list[int]:
    """Tokens of each response under ``tokenizer`` without special tokens, as ``study.evaluate`` counts them."""
    return [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]


def check_token_counts(plan: Plan, records: dict[str, Record | None], store: Store,
                       base_paths: dict[str, Path]) -> tuple[int, list[str]]:
    """Re-tokenise every stored response with its base's tokenizer; (samples checked, mismatches).

    ``base_paths`` maps a base name to its model directory (``ctx.base_model(name).path``).
    """
    from transformers import AutoTokenizer

    tokenizers: dict[str, Any] = {}
    checked, problems = 0, []
    for cid, cell in plan.by_id().items():
        rec = records.get(cid)
        if rec is None or rec.status != Outcome.DONE or rec.samples_sha256 is None:
            continue
        generated = [s for s in store.samples(cid) if "n_tokens" in s]
        if not generated:
            continue
        if cell.base not in tokenizers:
            tokenizers[cell.base] = AutoTokenizer.from_pretrained(base_paths[cell.base])
        counts = recount_tokens([s["response"] for s in generated], tokenizers[cell.base])
        for s, n in zip(generated, counts):
            checked += 1
            if int(s["n_tokens"]) != n:
                problems.append(f"{cell.describe()} {s['task']} doc {s['doc_id']}: stored {s['n_tokens']}, recounted {n}")
    return checked, problems
