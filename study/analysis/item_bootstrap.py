"""Intervals that count both sources of noise: which subsets were drawn, and which documents were asked.

``summary.csv``'s intervals resample subsets only and treat every score as exact; with 40 documents per task
a gain of 0.02 is well inside evaluation noise. Here each bootstrap replicate resamples the subsets of a
series *and* the documents of every task — the same documents for every cell of the base (a paired design:
the base, each single and each merge answered the same items) — and recomputes the series' mean gain over
the base and mean relative gain over each subset's best single. Per-document correctness comes from the
samples the store keeps for each cell. A series whose cells lack samples, or whose cells did not answer the
same documents, gets the subsets-only interval at the same level instead, marked in the ``interval`` column.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.measures import GROUP, LEVEL, N_BOOT, bootstrap_ci, bootstrap_seed
from study.plan import BASE, SINGLE

COLUMNS = [*GROUP, "measure", "ci_low", "ci_high", "interval"]
BOTH, SUBSETS = "subsets and documents", "subsets"


def _doc_vectors(store: Any, cell_id: str, metrics: dict[str, str]) -> dict[str, tuple[tuple[Any, ...], np.ndarray]]:
    """Per task: the document ids in order and each document's primary-metric value for one cell."""
    by_task: dict[str, list[tuple[Any, float]]] = {}
    for s in store.samples(cell_id):
        metric = metrics.get(s.get("task"))
        if metric is None or metric not in s.get("metrics", {}):
            continue
        by_task.setdefault(s["task"], []).append((s["doc_id"], float(s["metrics"][metric])))
    out = {}
    for task, rows in by_task.items():
        rows.sort(key=lambda r: (str(type(r[0])), r[0]))
        out[task] = (tuple(d for d, _ in rows), np.array([v for _, v in rows]))
    return out


def _cell_table(scores: pd.DataFrame, base: str) -> tuple[dict[str, str], dict[str, str]]:
    """The base's cell id per base name and each single's cell id per checkpoint, for one base."""
    rows = scores[scores.base == base]
    base_ids = rows[rows.method == BASE].cell_id.unique().tolist()
    singles = rows[rows.method == SINGLE].drop_duplicates("cell_id")
    return ({base: base_ids[0]} if base_ids else {},
            {json.loads(c)[0]: cid for c, cid in zip(singles.checkpoints, singles.cell_id)})


def item_intervals(scores: pd.DataFrame, per_subset: pd.DataFrame, store: Any, sweep_seed: int,
                   n_boot: int = N_BOOT, level: float = LEVEL) -> pd.DataFrame:
    """Per (base, method, params, k, measure): the percentile interval over subsets and documents (over
    subsets only, at the same level, where the cells' samples do not allow resampling documents)."""
    counted = per_subset[per_subset.counted]
    rows: list[dict[str, Any]] = []
    for base, series in counted.groupby("base", sort=True):
        base_id, singles = _cell_table(scores, base)
        if not base_id:
            continue
        metrics = {t: m for t, m in scores[scores.cell_id == base_id[base]][["task", "metric"]].itertuples(index=False)}
        needed = {base_id[base], *singles.values(), *series.cell_id}
        vectors = {cid: _doc_vectors(store, cid, metrics) for cid in needed}
        reference = vectors[base_id[base]]
        if not reference or any(set(v) != set(reference) or any(v[t][0] != reference[t][0] for t in reference)
                                for v in vectors.values()):
            rows += _subsets_only(series, sweep_seed, n_boot, level)
            continue
        index = {cid: i for i, cid in enumerate(sorted(needed))}
        tasks = sorted(reference)
        rng = np.random.default_rng(bootstrap_seed(sweep_seed, "items", base))
        avg = np.zeros((n_boot, len(index)))
        for task in tasks:
            n = len(reference[task][0])
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n
            values = np.stack([vectors[cid][task][1] for cid in sorted(needed)])
            avg += weights @ values.T
        avg /= len(tasks)
        b = avg[:, index[base_id[base]]]
        for key, g in series.groupby(GROUP, sort=True):
            merges = np.array([index[c] for c in g.cell_id])
            members = [[index[singles[c]] for c in json.loads(cks)] for cks in g.checkpoints]
            best = np.stack([avg[:, m].max(axis=1) for m in members], axis=1)
            pick = np.random.default_rng(bootstrap_seed(sweep_seed, "items", *key)).integers(
                0, len(merges), size=(n_boot, len(merges)))
            merged = np.take_along_axis(avg[:, merges], pick, axis=1)
            chosen_best = np.take_along_axis(best, pick, axis=1)
            gain = (merged - b[:, None]).mean(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(chosen_best != 0, (merged - chosen_best) / chosen_best, np.nan).mean(axis=1)
            for measure, draws in (("gain", gain), ("rel_gain_best_single", rel)):
                finite = draws[np.isfinite(draws)]
                lo, hi = (np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]) if len(finite)
                          else (np.nan, np.nan))
                rows.append({**dict(zip(GROUP, key)), "measure": measure, "ci_low": float(lo), "ci_high": float(hi),
                             "interval": BOTH})
    return pd.DataFrame(rows, columns=COLUMNS)


def _subsets_only(series: pd.DataFrame, sweep_seed: int, n_boot: int, level: float) -> list[dict[str, Any]]:
    rows = []
    for key, g in series.groupby(GROUP, sort=True):
        for measure in ("gain", "rel_gain_best_single"):
            lo, hi = bootstrap_ci(g[measure].astype(float).dropna(), bootstrap_seed(sweep_seed, measure, *key),
                                  n_boot, level)
            rows.append({**dict(zip(GROUP, key)), "measure": measure, "ci_low": lo, "ci_high": hi,
                         "interval": SUBSETS})
    return rows
