"""Paired comparisons of methods: on the subsets two series share, does one score higher than the other?

At a (base, k) every method merges the same drawn subsets (``subset_id`` indexes the draws), and every cell
answered the same documents, so two series A and B are compared through their differences, subset by subset:
d_s = avg(A, s) - avg(B, s) over the subsets counted for both (same checkpoints). Comparing their two means by
eye, or their two intervals, throws that pairing away; the subset-to-subset spread, common to both, cancels in d.

Interval: the hierarchical bootstrap of ``item_bootstrap``. Each replicate resamples the shared subsets (the
outer level) and, within every task, the documents (the inner level, with the same weights for A and B), and
takes the mean of d; the interval is the equal-tailed percentile interval of those replicates. Where the base's
cells have no per-document samples only the subsets are resampled (``interval`` says which).

p-value: two-sided, from the same replicates D*_1..D*_B, and consistent with the percentile interval (it is the
smallest alpha at which the 1 - alpha interval excludes 0): p = min(1, 2 * min(#{D* <= 0} + 1, #{D* >= 0} + 1) /
(B + 1)). The +1s keep it from being 0 with finitely many replicates, so with B = 20 000 the smallest p is about
1e-4. A difference whose replicates do not vary (one subset, and no documents to resample) is not tested: p is
NaN, or 1 when the difference is exactly 0. Nor is a subsets-only comparison on fewer than ``SMALL_N`` subsets
(p NaN): resampling two or three numbers, every replicate has the sign of the data and p would be ~1e-4
whatever the truth. With documents resampled a test on few subsets is kept, but it is conditional on the subsets
drawn: it says A beat B on *these* subsets by more than the documents' noise, not that A beats B on subsets in
general (``small_n`` flags it, and the report says so).

Holm: the comparisons of one (base, k), every pair of series (the m = n(n - 1)/2 cells of one panel of the
figure), are one family. Holm's step-down adjustment sorts the family's p-values ascending and replaces the i-th
by max over j <= i of min(1, (m - j + 1) p_(j)); comparing those with 0.05 keeps the chance of any false
"A differs from B" within the family at or below 5%, under any dependence between the comparisons. Families at
other ks are separate, as the panels are.

Columns of ``paired.csv`` (one row per (base, k, series A, series B) with at least one shared subset; A sorts
before B):

- ``base``, ``k``; ``method_a``, ``params_a``, ``method_b``, ``params_b``: the two series.
- ``n_subsets``: subsets counted for both; ``small_n``: fewer than ``measures.SMALL_N`` (5).
- ``mean_diff``: mean over those subsets of avg(A) - avg(B) (from the scores, as ``summary.csv``).
- ``ci_low``, ``ci_high``: its 95% hierarchical bootstrap interval; ``interval``: what it resamples.
- ``p_value``: the two-sided bootstrap p-value above; ``p_holm``: Holm-adjusted within the (base, k);
  ``holm_m``: the family's size; ``significant``: ``p_holm`` < 0.05.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from study.analysis.item_bootstrap import BOTH, SUBSETS, Replicates, quantiles, subset_picks
from study.analysis.measures import LEVEL, N_BOOT, SMALL_N
from study.analysis.style import series_key

ALPHA = 0.05
COLUMNS: dict[str, str] = {
    "base": "base name", "k": "subset size",
    "method_a": "series A: merge method", "params_a": "series A: grid point (JSON)",
    "method_b": "series B: merge method", "params_b": "series B: grid point (JSON)",
    "n_subsets": "subsets counted for both A and B (same draw)",
    "mean_diff": "mean over those subsets of avg(A) - avg(B)",
    "ci_low": "2.5% quantile, bootstrap over shared subsets and documents within tasks",
    "ci_high": "97.5% quantile (same bootstrap)",
    "interval": "what the interval resamples: 'subsets and documents', or 'subsets' without samples",
    "p_value": "two-sided bootstrap p: min(1, 2 min(#{D*<=0}+1, #{D*>=0}+1)/(B+1)); NaN: not tested",
    "p_holm": "Holm-adjusted p within the (base, k) family", "holm_m": "comparisons in that family",
    "significant": f"p_holm < {ALPHA}", "small_n": f"fewer than {SMALL_N} shared subsets",
}


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN entries are not tested and not counted in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def bootstrap_p(draws: np.ndarray, point: float) -> float:
    """The two-sided p-value of "the mean difference is 0" from its bootstrap replicates (module docstring)."""
    d = draws[np.isfinite(draws)]
    if not len(d):
        return float("nan")
    if np.all(d == d[0]):
        return 1.0 if point == 0 and d[0] == 0 else float("nan")
    tail = min(int((d <= 0).sum()), int((d >= 0).sum())) + 1
    return float(min(1.0, 2 * tail / (len(d) + 1)))


def _pair(a: pd.DataFrame, b: pd.DataFrame, rep: Replicates | None, key: tuple[Any, ...], sweep_seed: int,
          n_boot: int, level: float) -> dict[str, Any] | None:
    shared = a.merge(b, on=["subset_id", "checkpoints"], suffixes=("_a", "_b")).sort_values("subset_id")
    if shared.empty:
        return None
    values = (shared.avg_a - shared.avg_b).to_numpy(dtype=float)
    if rep is None:
        diffs, interval = np.broadcast_to(values, (n_boot, len(values))), SUBSETS
    else:
        diffs, interval = rep.of(shared.cell_id_a) - rep.of(shared.cell_id_b), BOTH
    picks = subset_picks(sweep_seed, ("paired", *key), len(values), diffs.shape[0])
    draws = np.take_along_axis(diffs, picks, axis=1).mean(axis=1)
    lo, hi = quantiles(draws, level)
    mean = float(values.mean())
    untestable = rep is None and len(values) < SMALL_N
    return {"n_subsets": len(values), "mean_diff": mean, "ci_low": lo, "ci_high": hi, "interval": interval,
            "p_value": float("nan") if untestable else bootstrap_p(draws, mean)}


def paired_table(per_subset: pd.DataFrame, replicates: dict[str, Replicates | None], sweep_seed: int,
                 n_boot: int = N_BOOT, level: float = LEVEL) -> pd.DataFrame:
    """``paired.csv``: every pair of series at every (base, k), on their shared counted subsets.

    ``replicates`` comes from ``item_bootstrap.document_replicates`` (a base missing from it, or None, is
    resampled over subsets only, with ``n_boot`` replicates)."""
    counted = per_subset[per_subset.counted]
    rows: list[dict[str, Any]] = []
    for (base, k), at_k in counted.groupby(["base", "k"], sort=True):
        series = [(key, g) for key, g in at_k.groupby(["method", "params"], sort=True)]
        family: list[dict[str, Any]] = []
        for i, (key_a, a) in enumerate(series):
            for key_b, b in series[i + 1:]:
                row = _pair(a, b, replicates.get(base), (base, int(k), *key_a, *key_b), sweep_seed, n_boot, level)
                if row is not None:
                    family.append({"base": base, "k": int(k), "method_a": key_a[0], "params_a": key_a[1],
                                   "method_b": key_b[0], "params_b": key_b[1], **row})
        adjusted = holm([r["p_value"] for r in family])
        m = int(np.isfinite([r["p_value"] for r in family]).sum()) if family else 0
        for r, p in zip(family, adjusted):
            rows.append({**r, "p_holm": float(p), "holm_m": m, "significant": bool(p < ALPHA),
                         "small_n": r["n_subsets"] < SMALL_N})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"k": "int64", "n_subsets": "int64", "holm_m": "int64", "significant": bool, "small_n": bool})


def difference_matrix(paired: pd.DataFrame, base: str, k: int, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For one panel: mean avg(row) - avg(column) and whether it is significant, over series ``keys``
    (``style.series_key``); NaN / False where two series share no subset. Antisymmetric by construction."""
    pos = {key: i for i, key in enumerate(keys)}
    diff, sig = np.full((len(keys), len(keys)), np.nan), np.zeros((len(keys), len(keys)), dtype=bool)
    part = paired[(paired.base == base) & (paired.k == k)]
    for r in part.itertuples(index=False):
        i, j = pos[series_key(r.method_a, r.params_a)], pos[series_key(r.method_b, r.params_b)]
        diff[i, j], diff[j, i] = r.mean_diff, -r.mean_diff
        sig[i, j] = sig[j, i] = bool(r.significant)
    return diff, sig

