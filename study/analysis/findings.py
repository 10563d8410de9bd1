"""Findings: the statements a report makes that another machine should reproduce.

The mini zoo is trained here, and float results of training differ between CPU models (AVX2 and AVX-512
kernels sum in different orders), so a zoo built on another machine has other weights and every exact score
moves. What should not move is a conclusion the data supports with room to spare. A *finding* is a
(base, method, params, k, measure) whose seeded bootstrap interval excludes 0, measured on at least two
subsets (one subset gives a point, not an interval). The interval resamples the subsets *and* the documents
each task asked (``item_bootstrap``), so a gain smaller than the evaluation's own noise is not a finding;
where the store holds no per-document samples it resamples subsets only, and says so in the ``interval``
column. The report states the findings as one list that must hold as a whole (a rerun checks every one), so
the intervals are simultaneous: each is taken at level 1 − 0.05/m for the m candidate statements (Bonferroni),
so that all m hold together with 95% confidence, rather than ~5% of them failing by chance. Findings read:
"merging beats (or loses to) the base" for
``gain``, "merging beats (or loses to) the best single checkpoint of the subset" for
``rel_gain_best_single``. The report writes them to ``findings.csv``; ``check_findings`` compares them with a
fresh run (``tests/test_findings.py`` does so on a freshly built zoo) and says which held: the fresh point
estimate has the same sign.
"""

from __future__ import annotations

import pandas as pd

from study.analysis.style import series_key

MEASURES = {
    "gain": "merged vs base (mean gain in average score)",
    "rel_gain_best_single": "merged vs the subset's best single checkpoint (mean relative gain)",
}
KEY = ["base", "method", "params", "k", "measure"]
COLUMNS = [*KEY, "n_subsets", "mean", "ci_low", "ci_high", "level", "interval", "direction"]
MIN_SUBSETS = 2
FAMILY_LEVEL = 0.95
"""Confidence that every stated finding holds at once (the per-statement level follows from the count)."""
N_BOOT_FINDINGS = 20000
"""Bootstrap replicates for the simultaneous intervals: their tails are 0.025/m, so 2000 would leave a
handful of replicates beyond the quantile."""
FINDINGS_COLUMNS: dict[str, str] = {
    "base, method, params, k": "the series and subset size, as in summary.csv",
    "measure": "gain (merged vs base) or rel_gain_best_single (merged vs the subset's best single)",
    "n_subsets": f"subsets counted (at least {MIN_SUBSETS})",
    "mean, ci_low, ci_high": "the measure's mean over subsets and its seeded simultaneous bootstrap interval",
    "level": "the interval's level, 1 - 0.05/m for m candidate statements (all m hold together at 95%)",
    "interval": "what the interval resamples: 'subsets and documents', or 'subsets' where no samples exist",
    "direction": "above or below 0: the interval lies entirely on that side",
}


def candidates(summary: pd.DataFrame) -> int:
    """How many statements a report could make: every measure of every row with at least two subsets."""
    return int((summary.n_subsets >= MIN_SUBSETS).sum()) * len(MEASURES)


def statement_level(summary: pd.DataFrame) -> float:
    """The per-statement level at which all ``candidates(summary)`` intervals hold together at FAMILY_LEVEL."""
    return 1 - (1 - FAMILY_LEVEL) / max(1, candidates(summary))


def stated_findings(summary: pd.DataFrame, items: pd.DataFrame | None = None,
                    level: float | None = None) -> pd.DataFrame:
    """Every (row, measure) of ``summary.csv`` whose interval excludes 0 on at least ``MIN_SUBSETS`` subsets:
    the interval from ``items`` (``item_bootstrap.item_intervals`` at ``level``) where it has one, else
    ``summary.csv``'s 95% interval over subsets (``level`` then 0.95)."""
    by_key = {} if items is None else {(r.base, r.method, r.params, int(r.k), r.measure):
                                       (r.ci_low, r.ci_high, r.interval) for r in items.itertuples(index=False)}
    rows = []
    for r in summary.itertuples(index=False):
        if r.n_subsets < MIN_SUBSETS:
            continue
        for measure in MEASURES:
            mean = getattr(r, f"{measure}_mean")
            lo, hi, interval = by_key.get((r.base, r.method, r.params, int(r.k), measure),
                                          (float("nan"), float("nan"), "subsets"))
            at = level if level is not None and not (pd.isna(lo) or pd.isna(hi)) else 0.95
            if pd.isna(lo) or pd.isna(hi):
                lo, hi, interval = getattr(r, f"{measure}_ci_low"), getattr(r, f"{measure}_ci_high"), "subsets"
            if lo > 0 or hi < 0:
                rows.append({"base": r.base, "method": r.method, "params": r.params, "k": int(r.k),
                             "measure": measure, "n_subsets": int(r.n_subsets), "mean": float(mean),
                             "ci_low": float(lo), "ci_high": float(hi), "level": at, "interval": interval,
                             "direction": "above" if lo > 0 else "below"})
    return pd.DataFrame(rows, columns=COLUMNS)


def check_findings(stated: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Each stated finding beside a fresh run's estimate: ``held`` is True when the fresh mean has the stated
    sign; a finding whose row the fresh run lacks is ``held = False`` with ``fresh_mean`` NaN."""
    fresh = {(r.base, r.method, r.params, int(r.k)): r for r in summary.itertuples(index=False)}
    rows = []
    for f in stated.itertuples(index=False):
        r = fresh.get((f.base, f.method, f.params, int(f.k)))
        mean = float("nan") if r is None else float(getattr(r, f"{f.measure}_mean"))
        held = (mean > 0) if f.direction == "above" else (mean < 0)
        rows.append({**f._asdict(), "fresh_mean": mean, "held": bool(held)})
    return pd.DataFrame(rows, columns=[*COLUMNS, "fresh_mean", "held"])


def findings_section(findings: pd.DataFrame, labels: dict[str, str]) -> str:
    """The report's "Findings" section: what the intervals support, in words, then the table."""
    level = f"{findings.level.iloc[0]:.4%}" if not findings.empty else "the simultaneous level"
    head = ("## Findings (intervals that exclude 0)\n\nA finding is a series at one k whose seeded bootstrap "
            f"interval over at least {MIN_SUBSETS} subsets and over the documents of every task (paired: every cell "
            "answered the same documents) excludes 0 (`findings.csv`); unlike `summary.csv`'s intervals it counts "
            "evaluation noise, so a gain the documents cannot resolve is not a finding. The list is meant to hold "
            f"as a whole, so each interval is taken at {level} (Bonferroni over every candidate statement: all "
            f"hold together with {FAMILY_LEVEL:.0%} confidence). The intervals do not model how training the zoo "
            "on another CPU moves the merges; the test below measures that. Exact scores depend on the "
            "machine that trained the zoo; these statements are the ones a rerun on another CPU is expected to "
            "reproduce (the fresh estimate has the same sign), and `tests/test_findings.py` checks them on a "
            "freshly built zoo.")
    if findings.empty:
        return head + "\n\nNo interval excludes 0: this run supports no finding."
    lines = []
    for f in findings.itertuples(index=False):
        series = labels.get(series_key(f.method, f.params), f.method)
        what = "the base" if f.measure == "gain" else "the best single checkpoint"
        lines.append(f"- {f.base}, {series} {f.params}, k = {f.k}: {f.direction} {what} "
                     f"({f.mean:+.4f}, interval [{f.ci_low:+.4f}, {f.ci_high:+.4f}] over {f.interval}, "
                     f"{f.n_subsets} subsets)")
    return head + "\n\n" + "\n".join(lines)
