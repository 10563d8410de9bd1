"""Intervals that count both sources of noise: which subsets were drawn, and which documents were asked.

``summary.csv``'s intervals resample subsets only and treat every score as exact; with 40 documents per task
a gain of 0.02 is well inside evaluation noise. Here the bootstrap is hierarchical, with two levels: each
replicate resamples the subsets of a series (the outer level) *and*, within every task, its documents (the
inner level; tasks are fixed, because avg(cell) is a mean over a fixed set of benchmarks). A group's score is
rebuilt from its leaves' resampled means as lm-eval builds it (``aggregate_subtask_metrics``): with
``weight_by_size``, weighted by each leaf's document count, which pools the documents of all its leaves; without,
the mean of its leaves' means. The documents are drawn once per replicate and shared by every cell of the
base — the base, each single and each merge answered the same documents, so the design is paired and the draw
is crossed with the subsets rather than redrawn per subset.
``document_replicates`` holds that inner level: every cell's average in every replicate. Consumers add the
outer level: ``item_intervals`` (a series' mean gain over the base and mean relative gain over each subset's
best single), ``beyond_noise`` (one subset at a time: no outer level), and ``study.analysis.paired`` (method
against method on shared subsets). Per-document correctness comes from the samples the store keeps for each
cell. A base whose cells lack samples, or did not answer the same documents, has no replicates; its series get
the subsets-only interval at the same level instead, marked in the ``interval`` column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.measures import GROUP, LEVEL, N_BOOT, bootstrap_ci, bootstrap_seed
from study.plan import BASE, SINGLE

COLUMNS = [*GROUP, "measure", "ci_low", "ci_high", "interval"]
BOTH, SUBSETS = "subsets and documents", "subsets"


@dataclass(frozen=True)
class Replicates:
    """One base's document-level bootstrap: ``avg[b, index[cell_id]]`` is the cell's average over benchmarks in
    replicate ``b``, every cell weighted by the same resampled documents (paired)."""

    base_id: str
    singles: dict[str, str]
    index: dict[str, int]
    avg: np.ndarray

    @property
    def n_boot(self) -> int:
        return int(self.avg.shape[0])

    def of(self, cell_ids: Any) -> np.ndarray:
        """The replicates of ``cell_ids``' averages, one column per id in order (n_boot × len(cell_ids))."""
        return self.avg[:, [self.index[c] for c in cell_ids]]

    @property
    def base(self) -> np.ndarray:
        return self.avg[:, self.index[self.base_id]]


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


@dataclass(frozen=True)
class _Part:
    """How one benchmark's score is made of per-task document means: its leaf tasks (the task itself for a
    single task) and lm-eval's ``weight_by_size`` for a group (None for a single task)."""

    tasks: tuple[str, ...]
    weight_by_size: bool | None = None


def _structure(scores: pd.DataFrame, store: Any, base_id: str) -> tuple[dict[str, str], dict[str, _Part]]:
    """From the base cell's rows: the metric whose per-document values are resampled for each task (a group's
    leaves: the group's metric, which is the one lm-eval aggregated), and each benchmark's parts. A group's
    ``weight_by_size`` is read from the base's record, where ``collect_results`` kept it."""
    rows = scores[scores.cell_id == base_id]
    bench = rows.benchmark.fillna(rows.task) if "benchmark" in rows.columns else rows.task
    own = {t: m for t, m, b in zip(rows.task, rows.metric, bench) if t == b}
    leaves: dict[str, list[str]] = {}
    for t, b in zip(rows.task, bench):
        if t != b:
            leaves.setdefault(b, []).append(t)
    metrics = {t: m for t, m in own.items() if t not in leaves}
    parts = {t: _Part((t,)) for t in metrics}
    if leaves:
        entries = store.get(base_id).scores
        for group, tasks in leaves.items():
            if group not in own:
                continue  # no score of its own: neither its leaves nor it count in the average
            metrics.update(dict.fromkeys(tasks, own[group]))
            parts[group] = _Part(tuple(sorted(tasks)), bool(entries[group].get("weight_by_size", True)))
    return metrics, parts


def _cell_table(scores: pd.DataFrame, base: str) -> tuple[dict[str, str], dict[str, str]]:
    """The base's cell id per base name and each single's cell id per checkpoint, for one base."""
    rows = scores[scores.base == base]
    base_ids = rows[rows.method == BASE].cell_id.unique().tolist()
    singles = rows[rows.method == SINGLE].drop_duplicates("cell_id")
    return ({base: base_ids[0]} if base_ids else {},
            {json.loads(c)[0]: cid for c, cid in zip(singles.checkpoints, singles.cell_id)})


def document_replicates(scores: pd.DataFrame, per_subset: pd.DataFrame, store: Any, sweep_seed: int,
                        n_boot: int = N_BOOT) -> dict[str, Replicates | None]:
    """Per base with counted subsets and a done base cell: the replicates of its base, singles and counted
    merges, or None where those cells' samples do not allow resampling documents (missing, or other documents,
    or some but not all leaves of a group). Without groups the draws and sums are those of a mean over tasks.

    The document weights depend only on the sweep seed, the base and its task list, never on which cells are
    included, so every consumer (and every rerun) sees the same draw.
    """
    from lm_eval.api.metrics import aggregate_subtask_metrics  # lm-eval's group score, as Group.aggregate uses it

    counted = per_subset[per_subset.counted]
    out: dict[str, Replicates | None] = {}
    for base, series in counted.groupby("base", sort=True):
        base_id, singles = _cell_table(scores, base)
        if not base_id:
            continue
        metrics, parts = _structure(scores, store, base_id[base])
        needed = {base_id[base], *singles.values(), *series.cell_id}
        vectors = {cid: _doc_vectors(store, cid, metrics) for cid in needed}
        reference = vectors[base_id[base]]
        if not reference or any(set(v) != set(reference) or any(v[t][0] != reference[t][0] for t in reference)
                                for v in vectors.values()):
            out[base] = None
            continue
        resampled = {b: p for b, p in sorted(parts.items()) if any(t in reference for t in p.tasks)}
        if any(t not in reference for p in resampled.values() for t in p.tasks):
            out[base] = None  # a group with some leaves unsampled: its score cannot be rebuilt
            continue
        order = sorted(needed)
        rng = np.random.default_rng(bootstrap_seed(sweep_seed, "items", base))
        avg = np.zeros((n_boot, len(order)))
        for part in resampled.values():
            means, sizes = [], []
            for task in part.tasks:
                n = len(reference[task][0])
                weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n
                means.append(weights @ np.stack([vectors[cid][task][1] for cid in order]).T)
                sizes.append(n)
            avg += means[0] if part.weight_by_size is None else aggregate_subtask_metrics(means, sizes,
                                                                                           part.weight_by_size)
        avg /= len(resampled)
        out[base] = Replicates(base_id[base], singles, {cid: i for i, cid in enumerate(order)}, avg)
    return out


def subset_picks(sweep_seed: int, key: Any, n_subsets: int, n_boot: int) -> np.ndarray:
    """The outer level: ``n_boot`` resamples (with replacement) of ``n_subsets`` subset positions, seeded by the
    row's key so a row's interval does not depend on the others."""
    return np.random.default_rng(bootstrap_seed(sweep_seed, "items", *key)).integers(
        0, n_subsets, size=(n_boot, n_subsets))


def quantiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The equal-tailed percentile interval of the finite ``draws`` (NaN, NaN when none is finite)."""
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def item_intervals(scores: pd.DataFrame, per_subset: pd.DataFrame, store: Any, sweep_seed: int,
                   n_boot: int = N_BOOT, level: float = LEVEL,
                   replicates: dict[str, Replicates | None] | None = None) -> pd.DataFrame:
    """Per (base, method, params, k, measure): the percentile interval over subsets and documents (over
    subsets only, at the same level, where the cells' samples do not allow resampling documents).

    ``replicates`` (from ``document_replicates``) saves recomputing the document level; its ``n_boot`` wins."""
    if replicates is None:
        replicates = document_replicates(scores, per_subset, store, sweep_seed, n_boot)
    counted = per_subset[per_subset.counted]
    rows: list[dict[str, Any]] = []
    for base, series in counted.groupby("base", sort=True):
        if base not in replicates:
            continue
        rep = replicates[base]
        if rep is None:
            rows += _subsets_only(series, sweep_seed, n_boot, level)
            continue
        for key, g in series.groupby(GROUP, sort=True):
            merges = rep.of(g.cell_id)
            best = np.stack([rep.of(rep.singles[c] for c in json.loads(cks)).max(axis=1) for cks in g.checkpoints],
                            axis=1)
            pick = subset_picks(sweep_seed, key, len(g), rep.n_boot)
            merged = np.take_along_axis(merges, pick, axis=1)
            chosen_best = np.take_along_axis(best, pick, axis=1)
            gain = (merged - rep.base[:, None]).mean(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(chosen_best != 0, (merged - chosen_best) / chosen_best, np.nan).mean(axis=1)
            for measure, draws in (("gain", gain), ("rel_gain_best_single", rel)):
                lo, hi = quantiles(draws, level)
                rows.append({**dict(zip(GROUP, key)), "measure": measure, "ci_low": lo, "ci_high": hi,
                             "interval": BOTH})
    return pd.DataFrame(rows, columns=COLUMNS)


def beyond_noise(per_subset: pd.DataFrame, replicates: dict[str, Replicates | None],
                 level: float = LEVEL) -> pd.DataFrame:
    """``per_subset`` with ``above_noise`` / ``below_noise`` filled for each counted merge: 1.0 when its paired
    document-level interval of avg(merge) - avg(base) (at ``level``) lies entirely above / below 0, else 0.0;
    NaN where its base has no replicates (no samples to tell noise from a gain).

    One subset at a time, so only the inner level is resampled: the question is whether *this* merge beat the
    base by more than the documents asked can explain, not whether merging tends to."""
    out = per_subset.copy()
    for col in ("above_noise", "below_noise"):
        out[col] = np.nan
    for i, r in out[out.counted].iterrows():
        rep = replicates.get(r.base)
        if rep is None:
            continue
        lo, hi = quantiles(rep.of([r.cell_id])[:, 0] - rep.base, level)
        out.loc[i, "above_noise"], out.loc[i, "below_noise"] = float(lo > 0), float(hi < 0)
    return out


def _subsets_only(series: pd.DataFrame, sweep_seed: int, n_boot: int, level: float) -> list[dict[str, Any]]:
    rows = []
    for key, g in series.groupby(GROUP, sort=True):
        for measure in ("gain", "rel_gain_best_single"):
            lo, hi = bootstrap_ci(g[measure].astype(float).dropna(), bootstrap_seed(sweep_seed, measure, *key),
                                  n_boot, level)
            rows.append({**dict(zip(GROUP, key)), "measure": measure, "ci_low": lo, "ci_high": hi,
                         "interval": SUBSETS})
    return rows
