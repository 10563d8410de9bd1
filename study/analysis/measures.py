"""The study's measures (docs/study.md), computed from the tidy scores table alone.

Every function here takes ``scores.parquet``'s frame, never the store, so the report's numbers can be
recomputed by anyone from that one file with the same float operations: the average of a cell is the pandas
mean over its task rows, then every (base, method, params, k) number is the pandas mean over its subsets.

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

Columns of ``reference.csv`` (one row per (base, k)): ``base``, ``k``, ``reference`` (``single``: the mean gain of
one checkpoint over the base, at k = 1; ``best_single``: mean over the (base, k) subsets of the best single's
gain), ``n``, ``gain_mean``, ``gain_ci_low``, ``gain_ci_high``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from study.checkpoints import digest
from study.plan import BASE, SINGLE

GROUP = ["base", "method", "params", "k"]
CELL_KEY = ["cell_id", "base", "method", "params", "k", "subset_id", "checkpoints"]
N_BOOT = 2000
LEVEL = 0.95

SUMMARY_COLUMNS: dict[str, str] = {
    "base": "base name", "method": "merge method (or ensemble)", "params": "grid point as written (JSON)",
    "k": "subset size", "n_subsets": "subsets counted (merge, base and all singles done)",
    "gain_mean": "mean over subsets of avg(merge) - avg(base)",
    "gain_ci_low": "2.5% seeded bootstrap quantile of gain_mean", "gain_ci_high": "97.5% quantile",
    "p_beat_base": "fraction of subsets with avg(merge) > avg(base) (strict)",
    "p_beat_base_ci_low": "2.5% bootstrap quantile", "p_beat_base_ci_high": "97.5% bootstrap quantile",
    "rel_gain_best_single_mean": "mean over subsets of (avg(merge) - best single) / best single",
    "rel_gain_best_single_ci_low": "2.5% bootstrap quantile", "rel_gain_best_single_ci_high": "97.5% quantile",
}


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


def cell_averages(scores: pd.DataFrame) -> pd.DataFrame:
    """avg(cell) = unweighted mean of the primary metric over the cell's tasks, one row per plan cell."""
    grouped = scores.groupby(CELL_KEY, sort=False)
    out = grouped["score"].mean().rename("avg").reset_index()
    tasks = grouped["task"].agg(lambda t: "\n".join(sorted(t))).rename("tasks").reset_index(drop=True)
    return out.assign(tasks=tasks.values)


def subset_measures(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per merge (or ensemble) plan cell: its gain, win and relative gain, and whether it counts.

    ``counted`` is False (and ``dropped_because`` says why) when the base or a single of the subset is not
    done, or a cell's task set differs from the base's.
    """
    cells = cell_averages(scores)
    bases = {r.base: r for r in cells[cells.method == BASE].itertuples()}
    singles = {(r.base, json.loads(r.checkpoints)[0]): r for r in cells[cells.method == SINGLE].itertuples()}
    rows = []
    for r in cells[~cells.method.isin([BASE, SINGLE])].itertuples():
        ckpts = json.loads(r.checkpoints)
        base = bases.get(r.base)
        members = [singles.get((r.base, c)) for c in ckpts]
        row = {**{c: getattr(r, c) for c in CELL_KEY}, "avg": r.avg, "base_avg": np.nan, "best_single": np.nan,
               "gain": np.nan, "win": False, "rel_gain_best_single": np.nan, "counted": False}
        why = _why_dropped(r, base, ckpts, members)
        if why is None:
            best = max(m.avg for m in members)
            row.update(base_avg=base.avg, best_single=best, gain=r.avg - base.avg, win=bool(r.avg > base.avg),
                       rel_gain_best_single=(r.avg - best) / best if best != 0 else np.nan, counted=True)
        rows.append({**row, "dropped_because": why or ""})
    frame = pd.DataFrame(rows, columns=[*CELL_KEY, "avg", "base_avg", "best_single", "gain", "win",
                                        "rel_gain_best_single", "counted", "dropped_because"])
    # typed even with no rows (a store of base and singles only): an untyped empty ``counted`` column would
    # make ``frame[frame.counted]`` select columns instead of rows
    return frame.astype({"win": bool, "counted": bool})


def _why_dropped(cell: Any, base: Any, ckpts: list[str], members: list[Any]) -> str | None:
    if base is None:
        return "base not done"
    missing = [c for c, m in zip(ckpts, members) if m is None]
    if missing:
        return f"single {missing[0]} not done"
    if cell.tasks != base.tasks or any(m.tasks != base.tasks for m in members):
        return "task set differs from the base's"
    return None


def summarize(per_subset: pd.DataFrame, sweep_seed: int) -> pd.DataFrame:
    """``summary.csv``: per (base, method, params, k), means over counted subsets and bootstrap intervals."""
    counted = per_subset[per_subset.counted]
    rows = []
    for key, g in counted.groupby(GROUP, sort=True):
        seed = bootstrap_seed(sweep_seed, *key)
        row = dict(zip(GROUP, key))
        row["n_subsets"] = len(g)
        for name, col in (("gain", "gain"), ("p_beat_base", "win"), ("rel_gain_best_single", "rel_gain_best_single")):
            values = g[col].astype(float)
            point = values.mean()
            row[name if name == "p_beat_base" else f"{name}_mean"] = point
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bootstrap_ci(values, seed)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def reference_gains(scores: pd.DataFrame, subsets: dict[str, dict[int, list[tuple[str, ...]]]],
                    sweep_seed: int) -> pd.DataFrame:
    """``reference.csv``: the mean single gain (k = 1) and the mean best-single gain of each k's subsets.

    These are the curves' reference lines: a merge whose gain is under the best-single line is worse than
    simply picking the best of the checkpoints it merged.
    """
    cells = cell_averages(scores)
    rows = []
    for base, by_k in subsets.items():
        base_rows = cells[(cells.base == base) & (cells.method == BASE)]
        if base_rows.empty:
            continue
        base_avg = base_rows.avg.iloc[0]
        single_rows = cells[(cells.base == base) & (cells.method == SINGLE)]
        single = {json.loads(c)[0]: a for c, a in zip(single_rows.checkpoints, single_rows.avg)}
        gains = [a - base_avg for a in single.values()]
        rows.append(_reference_row(base, 1, "single", gains, sweep_seed))
        for k, drawn in sorted(by_k.items()):
            best = [max(single[c] for c in s) for s in drawn if all(c in single for c in s)]
            rows.append(_reference_row(base, k, "best_single", [b - base_avg for b in best], sweep_seed))
    return pd.DataFrame(rows, columns=["base", "k", "reference", "n", "gain_mean", "gain_ci_low", "gain_ci_high"])


def _reference_row(base: str, k: int, kind: str, gains: list[float], sweep_seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(gains, bootstrap_seed(sweep_seed, base, kind, k))
    mean = float(pd.Series(gains, dtype=float).mean()) if gains else float("nan")
    return {"base": base, "k": k, "reference": kind, "n": len(gains), "gain_mean": mean, "gain_ci_low": lo,
            "gain_ci_high": hi}


def task_gains(scores: pd.DataFrame, per_subset: pd.DataFrame) -> pd.DataFrame:
    """Per (base, method, params, k, task): mean over counted subsets of score(merge) - score(base)."""
    counted = per_subset[per_subset.counted][CELL_KEY]
    merged = scores.merge(counted, on=CELL_KEY)
    base_scores = scores[scores.method == BASE][["base", "task", "score"]].rename(columns={"score": "base_score"})
    merged = merged.merge(base_scores, on=["base", "task"])
    merged["gain"] = merged.score - merged.base_score
    return merged.groupby([*GROUP, "task"], sort=True)["gain"].mean().reset_index()
