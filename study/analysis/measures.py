"""The study's measures (docs/study.md), computed from the tidy scores table alone.

Every function here takes ``scores.parquet``'s frame, never the store, so the report's numbers can be
recomputed by anyone from that one file with the same float operations: the average of a cell is the pandas
mean over its benchmark rows (``task == benchmark``: one row per entry of ``evaluation.tasks``, a group counted
once by lm-eval's own aggregate of its leaf tasks; without groups, every row), then every (base, method,
params, k) number is the pandas mean over its subsets.

A subset counts only when its merge, the base and every single checkpoint of the subset are done with the
same task set as the base (a cell missing a task would shift its average); the others are dropped and the
report says how many.

Columns of ``summary.csv`` (one row per (base, method, params, k) with k >= 2 and at least one counted subset):

- ``base``, ``method``, ``params``, ``k``: as in ``scores.parquet``.
- ``n_subsets``: subsets counted.
- ``gain_mean``: mean over subsets of avg(merge) - avg(base); ``gain_ci_low``/``gain_ci_high``: its seeded 95%
  bootstrap interval over subsets (collapses to the point with one subset).
- ``p_beat_base``: fraction of subsets with avg(merge) > avg(base) strictly (a tie is not a win);
  ``p_beat_base_ci_low``/``p_beat_base_ci_high``: its bootstrap interval.
- ``rel_gain_best_single_mean``: mean over subsets of (avg(merge) - best) / best, best = max over the subset's
  checkpoints of avg(single); ``rel_gain_best_single_ci_low``/``rel_gain_best_single_ci_high``: its
  bootstrap interval.
- ``normalised_mean``: mean over subsets of the normalised score, the mean over the subset's checkpoints c of
  score(merge, own(c)) / score(single c, own(c)), own(c) the task c names as its own (``own_task``: a zoo
  expert's skill task; checkpoints that name none, or whose own task was not evaluated, are left out; NaN when
  none is left); 1 means the merge keeps every expert's own-task score. ``normalised_ci_low``/
  ``normalised_ci_high``: its bootstrap interval over subsets.
- ``gain_hier_ci_low``/``gain_hier_ci_high``: 95% interval of ``gain_mean`` from the hierarchical bootstrap over
  subsets and, within tasks, documents (``item_bootstrap``); the subsets-only interval where the store holds no
  per-document samples; NaN when ``summarize`` is not given those intervals.
- ``p_beat_base_beyond_noise``: fraction of subsets whose merge beats the base beyond evaluation noise (its
  paired 95% document-level interval of avg(merge) - avg(base) lies above 0; ``item_bootstrap.beyond_noise``);
  ``p_below_base_beyond_noise``: fraction below the base beyond noise. NaN without per-document samples.
- ``small_n``: True when fewer than ``SMALL_N`` (5) subsets were counted: its intervals rest on too few subsets
  to be trusted, and the report says so.

Columns of ``reference.csv`` (one row per (base, k)): ``base``, ``k``, ``reference`` (``single``: the mean gain of
one checkpoint over the base, at k = 1; ``best_single``: mean over the (base, k) subsets of the best single's
gain), ``n``, ``gain_mean``, ``gain_ci_low``, ``gain_ci_high``, and where returning the base unchanged lies on the
other scales for the same subsets (the base line of the relative figures): ``base_rel_gain_best_single``, the mean
of (avg(base) - best) / best (at k = 1: of (avg(base) - avg(single)) / avg(single)), and ``base_normalised``, the
base's normalised score (NaN where no checkpoint names its task).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from study.checkpoints import digest
from study.plan import BASE, SINGLE

GROUP = ["base", "method", "params", "k"]
CELL_KEY = ["cell_id", "base", "method", "params", "k", "subset_id", "checkpoints"]
N_BOOT = 2000
LEVEL = 0.95
SMALL_N = 5
"""Fewer counted subsets than this at a k draw a warning (a ``small_n`` column, and a line in the report)."""

SUMMARY_COLUMNS: dict[str, str] = {
    "base": "base name", "method": "merge method (or ensemble)", "params": "grid point as written (JSON)",
    "k": "subset size", "n_subsets": "subsets counted (merge, base and all singles done)",
    "gain_mean": "mean over subsets of avg(merge) - avg(base)",
    "gain_ci_low": "2.5% seeded bootstrap quantile of gain_mean", "gain_ci_high": "97.5% quantile",
    "p_beat_base": "fraction of subsets with avg(merge) > avg(base) (strict)",
    "p_beat_base_ci_low": "2.5% bootstrap quantile", "p_beat_base_ci_high": "97.5% bootstrap quantile",
    "rel_gain_best_single_mean": "mean over subsets of (avg(merge) - best single) / best single",
    "rel_gain_best_single_ci_low": "2.5% bootstrap quantile", "rel_gain_best_single_ci_high": "97.5% quantile",
    "normalised_mean": "mean over subsets of mean_c score(merge, own task of c) / score(c, own task of c)",
    "normalised_ci_low": "2.5% bootstrap quantile", "normalised_ci_high": "97.5% quantile",
    "gain_hier_ci_low": "2.5% quantile of gain_mean, bootstrap over subsets and documents within tasks",
    "gain_hier_ci_high": "97.5% quantile (same bootstrap)",
    "p_beat_base_beyond_noise": "fraction of subsets whose paired 95% document-level gain interval lies above 0",
    "p_below_base_beyond_noise": "fraction of subsets whose paired 95% document-level gain interval lies below 0",
    "small_n": f"fewer than {SMALL_N} subsets counted: intervals unreliable",
}
REFERENCE_COLUMNS = ["base", "k", "reference", "n", "gain_mean", "gain_ci_low", "gain_ci_high",
                     "base_rel_gain_best_single", "base_normalised"]


@cache
def own_task(checkpoint: str) -> str | None:
    """The task a checkpoint names as its own: a zoo expert's skill task (``zoo:add`` and ``zoo-bpe:add`` ->
    ``zoo_add``, from the family's spec, so no built zoo is needed); None for a checkpoint that names none (a
    hub or local model)."""
    from study.zoo.family import get_family
    from study.zoo.names import split_model_ref

    zoo_ref = split_model_ref(checkpoint)
    if zoo_ref is None:
        return None
    family = get_family(zoo_ref[0])
    return family.own_task(zoo_ref[1]) if zoo_ref[1] in family.experts else None


def normalised_score(of: dict[tuple[str, str], float], cell_id: str, singles: dict[str, str],
                     ckpts: list[str]) -> float:
    """Mean over ``ckpts`` that name an own task of score(cell, own) / score(that checkpoint's single, own).

    ``of`` maps (cell id, task) to score, ``singles`` a checkpoint to its single cell; a checkpoint whose own
    task is missing from either cell, or whose expert scores 0 there, is left out (NaN when none is left)."""
    ratios = []
    for c in ckpts:
        task = own_task(c)
        mine, expert = of.get((cell_id, task)), of.get((singles.get(c, ""), task))
        if task is not None and mine is not None and expert:
            ratios.append(mine / expert)
    return float(np.mean(ratios)) if ratios else float("nan")


def bootstrap_seed(sweep_seed: int, *key: Any) -> int:
    """A per-row seed from the sweep seed and the row's key: a row's interval does not depend on the others."""
    return int(digest("bootstrap", sweep_seed, *key)[:8], 16)


def bootstrap_ci(values: Any, seed: int, n_boot: int = N_BOOT, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean, resampling ``values`` (one per subset) with replacement.

    With one value, or all values equal, the interval is the point itself: there is no spread to show.
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def is_benchmark(scores: pd.DataFrame) -> pd.Series:
    """The rows that are one benchmark's score: ``task == benchmark`` (a single task, or a top-level group's
    aggregate), not a group's leaf. Every row of a frame without benchmarks (one written before they existed)."""
    if "benchmark" not in scores.columns:
        return pd.Series(True, index=scores.index)
    return scores.benchmark.isna() | (scores.benchmark == scores.task)


def cell_averages(scores: pd.DataFrame) -> pd.DataFrame:
    """avg(cell) = unweighted mean of the primary metric over the cell's benchmarks, one row per plan cell;
    ``tasks`` lists every task row (leaves included), so a cell missing a group's leaf differs from the base.

    A group's leaf rows are masked to NaN, which the mean skips: without groups the float operations are
    exactly those of a mean over every row."""
    grouped = scores.assign(score=scores.score.where(is_benchmark(scores))).groupby(CELL_KEY, sort=False)
    out = grouped["score"].mean().rename("avg").reset_index()
    tasks = grouped["task"].agg(lambda t: "\n".join(sorted(t))).rename("tasks").reset_index(drop=True)
    return out.assign(tasks=tasks.values)


def subset_measures(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per merge (or ensemble) plan cell: its gain, win and relative gain, and whether it counts.

    ``counted`` is False (and ``dropped_because`` says why) when the base or a single of the subset is not
    done, or a cell's task set differs from the base's. ``normalised`` and ``base_normalised`` are the merge's
    and the base's normalised scores on the subset (``normalised_score``); ``above_noise`` and ``below_noise``
    are NaN here (they need the store's samples: ``item_bootstrap.beyond_noise`` fills them).
    """
    cells = cell_averages(scores)
    bases = {r.base: r for r in cells[cells.method == BASE].itertuples()}
    singles = {(r.base, json.loads(r.checkpoints)[0]): r for r in cells[cells.method == SINGLE].itertuples()}
    of = task_scores(scores)
    rows = []
    for r in cells[~cells.method.isin([BASE, SINGLE])].itertuples():
        ckpts = json.loads(r.checkpoints)
        base = bases.get(r.base)
        members = [singles.get((r.base, c)) for c in ckpts]
        row = {**{c: getattr(r, c) for c in CELL_KEY}, "avg": r.avg, "base_avg": np.nan, "best_single": np.nan,
               "gain": np.nan, "win": False, "rel_gain_best_single": np.nan, "normalised": np.nan,
               "base_normalised": np.nan, "counted": False}
        why = _why_dropped(r, base, ckpts, members)
        if why is None:
            best = max(m.avg for m in members)
            own = {c: m.cell_id for c, m in zip(ckpts, members)}
            row.update(base_avg=base.avg, best_single=best, gain=r.avg - base.avg, win=bool(r.avg > base.avg),
                       rel_gain_best_single=(r.avg - best) / best if best != 0 else np.nan,
                       normalised=normalised_score(of, r.cell_id, own, ckpts),
                       base_normalised=normalised_score(of, base.cell_id, own, ckpts), counted=True)
        rows.append({**row, "dropped_because": why or "", "above_noise": np.nan, "below_noise": np.nan})
    frame = pd.DataFrame(rows, columns=[*CELL_KEY, "avg", "base_avg", "best_single", "gain", "win",
                                        "rel_gain_best_single", "normalised", "base_normalised", "counted",
                                        "dropped_because", "above_noise", "below_noise"])
    # typed even with no rows (a store of base and singles only): an untyped empty ``counted`` column would
    # make ``frame[frame.counted]`` select columns instead of rows
    return frame.astype({"win": bool, "counted": bool})


def task_scores(scores: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(cell id, task) -> score (a cell listed under two grid points has the same scores under both)."""
    return {(c, t): float(v) for c, t, v in zip(scores.cell_id, scores.task, scores.score)}


def _why_dropped(cell: Any, base: Any, ckpts: list[str], members: list[Any]) -> str | None:
    if base is None:
        return "base not done"
    missing = [c for c, m in zip(ckpts, members) if m is None]
    if missing:
        return f"single {missing[0]} not done"
    if cell.tasks != base.tasks or any(m.tasks != base.tasks for m in members):
        return "task set differs from the base's"
    return None


def summarize(per_subset: pd.DataFrame, sweep_seed: int, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """``summary.csv``: per (base, method, params, k), means over counted subsets and bootstrap intervals.

    ``items`` (``item_bootstrap.item_intervals`` at 95%) supplies ``gain_hier_ci_low``/``_high``; without it they
    are NaN. The beyond-noise shares are NaN unless ``per_subset`` went through ``item_bootstrap.beyond_noise``.
    """
    counted = per_subset[per_subset.counted]
    hier = {} if items is None else {(r.base, r.method, r.params, int(r.k)): (r.ci_low, r.ci_high)
                                     for r in items[items.measure == "gain"].itertuples(index=False)}
    rows = []
    for key, g in counted.groupby(GROUP, sort=True):
        seed = bootstrap_seed(sweep_seed, *key)
        row = dict(zip(GROUP, key))
        row["n_subsets"] = len(g)
        for name, col in (("gain", "gain"), ("p_beat_base", "win"), ("rel_gain_best_single", "rel_gain_best_single"),
                          ("normalised", "normalised")):
            values = g[col].astype(float)
            if name == "normalised":
                values = values.dropna()
            point = values.mean()
            row[name if name == "p_beat_base" else f"{name}_mean"] = point
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bootstrap_ci(values, seed)
        row["gain_hier_ci_low"], row["gain_hier_ci_high"] = hier.get((*key[:3], int(key[3])), (np.nan, np.nan))
        row["p_beat_base_beyond_noise"] = g.above_noise.astype(float).mean(skipna=False)
        row["p_below_base_beyond_noise"] = g.below_noise.astype(float).mean(skipna=False)
        row["small_n"] = len(g) < SMALL_N
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)).astype({"small_n": bool})


def reference_gains(scores: pd.DataFrame, subsets: dict[str, dict[int, list[tuple[str, ...]]]],
                    sweep_seed: int) -> pd.DataFrame:
    """``reference.csv``: the mean single gain (k = 1) and the mean best-single gain of each k's subsets, with
    where returning the base unchanged lies on the relative and normalised scales for the same subsets.

    These are the curves' reference lines: a merge whose gain is under the best-single line is worse than
    simply picking the best of the checkpoints it merged, and a merge under the base line of a relative figure
    is worse than not merging at all (when every expert scores below the base, that line is above 0).
    """
    cells = cell_averages(scores)
    of = task_scores(scores)
    rows = []
    for base, by_k in subsets.items():
        base_rows = cells[(cells.base == base) & (cells.method == BASE)]
        if base_rows.empty:
            continue
        base_avg, base_id = base_rows.avg.iloc[0], base_rows.cell_id.iloc[0]
        single_rows = cells[(cells.base == base) & (cells.method == SINGLE)]
        single = {json.loads(c)[0]: a for c, a in zip(single_rows.checkpoints, single_rows.avg)}
        ids = {json.loads(c)[0]: i for c, i in zip(single_rows.checkpoints, single_rows.cell_id)}
        drawn_by_k = {1: [(c,) for c in single], **{k: [s for s in d if all(c in single for c in s)]
                                                   for k, d in sorted(by_k.items()) if k >= 2}}
        for k, drawn in drawn_by_k.items():
            best = [max(single[c] for c in s) for s in drawn]
            row = _reference_row(base, k, "single" if k == 1 else "best_single", [b - base_avg for b in best],
                                 sweep_seed)
            rel = [(base_avg - b) / b for b in best if b != 0]
            norm = [v for v in (normalised_score(of, base_id, ids, list(s)) for s in drawn) if not np.isnan(v)]
            row["base_rel_gain_best_single"] = float(np.mean(rel)) if rel else float("nan")
            row["base_normalised"] = float(np.mean(norm)) if norm else float("nan")
            rows.append(row)
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def _reference_row(base: str, k: int, kind: str, gains: list[float], sweep_seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(gains, bootstrap_seed(sweep_seed, base, kind, k))
    mean = float(pd.Series(gains, dtype=float).mean()) if gains else float("nan")
    return {"base": base, "k": k, "reference": kind, "n": len(gains), "gain_mean": mean, "gain_ci_low": lo,
            "gain_ci_high": hi}


def task_gains(scores: pd.DataFrame, per_subset: pd.DataFrame) -> pd.DataFrame:
    """Per (base, method, params, k, task): mean over counted subsets of score(merge) - score(base), one ``task``
    per benchmark (a group's own score, not its leaves: those stay in ``scores.parquet``)."""
    counted = per_subset[per_subset.counted][CELL_KEY]
    scores = scores[is_benchmark(scores)]
    merged = scores.merge(counted, on=CELL_KEY)
    base_scores = scores[scores.method == BASE][["base", "task", "score"]].rename(columns={"score": "base_score"})
    merged = merged.merge(base_scores, on=["base", "task"])
    merged["gain"] = merged.score - merged.base_score
    return merged.groupby([*GROUP, "task"], sort=True)["gain"].mean().reset_index()
