"""What the intervals support, in words generated from the tables: no sentence of it is typed by hand.

A reader of ``summary.csv`` sees dozens of means with intervals; this section says what they add up to, and
what they do not: which gains over the base survive subsets and documents, how many wins are wins beyond
evaluation noise, how merges stand against simply returning the base unchanged, how much of each expert's own
skill a merge keeps, which methods differ from which on the subsets they share (after Holm), and where too
few subsets were drawn for any of it to be trusted. Every number comes from ``summary.csv``, ``reference.csv``,
``paired.csv`` or ``findings.csv``; the thresholds are the ones those tables use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.analysis.measures import SMALL_N
from study.analysis.style import series_key, series_label


def _name(labels: dict[str, str], method: str, params: str) -> str:
    return series_label(labels.get(series_key(method, params), method), params)


def _ks(ks: list[int]) -> str:
    return ", ".join(str(k) for k in sorted(ks))


def small_n_note(summary: pd.DataFrame, short: bool = False) -> str:
    """A warning naming every (base, k) where a series counted fewer than ``SMALL_N`` subsets; "" when none.
    ``short``: one line that points to the full warning (for the figures and the summary table)."""
    small = summary[summary.n_subsets < SMALL_N]
    if small.empty:
        return ""
    parts = []
    for base, g in small.groupby("base", sort=True):
        by_n = g.groupby("k").n_subsets.min()
        parts.append(f"{base} at " + "; ".join(f"k = {_ks(list(ks.index))} ({n} subset{'s' if n != 1 else ''})"
                                               for n, ks in by_n.groupby(by_n, sort=True)))
    if short:
        return (f"**Small n:** fewer than {SMALL_N} subsets for {'; '.join(parts)}; intervals there are unreliable "
                f"(see \"What the intervals support\").")
    return (f"**Small n.** Fewer than {SMALL_N} subsets were counted for {len(small)} of {len(summary)} "
            f"(series, k) rows: {'; '.join(parts)} (`small_n` in `summary.csv` and `paired.csv`). An interval over "
            f"so few subsets resamples a handful of numbers and cannot show how merging varies with the subset, "
            f"and P(merged > base) over n subsets takes only the values 0, 1/n, ..., 1; read these rows as "
            f"anecdotes.")


def _gain_lines(summary: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    lo = summary.gain_hier_ci_low.fillna(summary.gain_ci_low)
    hi = summary.gain_hier_ci_high.fillna(summary.gain_ci_high)
    side = np.where(lo > 0, "above", np.where(hi < 0, "below", "inconclusive"))
    counts = {s: int((side == s).sum()) for s in ("above", "below", "inconclusive")}
    lines = [f"- Gain over the base (95% interval over subsets and, within tasks, documents; one row at a time, "
             f"not simultaneous): of {len(summary)} (series, k) rows, {counts['above']} lie above 0, "
             f"{counts['below']} below, and {counts['inconclusive']} include 0."]
    frame = summary.assign(side=side)
    for (method, params), g in frame.groupby(["method", "params"], sort=True):
        said = [f"{s} the base at k = {_ks(list(g[g.side == s].k))}" for s in ("above", "below")
                if (g.side == s).any()]
        if (g.side == "inconclusive").any():
            said.append(f"inconclusive at k = {_ks(list(g[g.side == 'inconclusive'].k))}")
        lines.append(f"- {_name(labels, method, params)}: {'; '.join(said)}.")
    return lines


def _noise_line(summary: pd.DataFrame) -> str:
    n = summary.n_subsets.astype(float)
    total, wins = int(n.sum()), int(round((summary.p_beat_base * n).sum()))
    if summary.p_beat_base_beyond_noise.isna().any():
        return (f"- P(merged > base): {wins} of {total} counted merges beat the base; whether by more than "
                f"evaluation noise is not known (the store keeps no per-document samples for some cells).")
    above = int(round((summary.p_beat_base_beyond_noise * n).sum()))
    below = int(round((summary.p_below_base_beyond_noise * n).sum()))
    return (f"- P(merged > base): {wins} of {total} counted merges beat the base, {above} of them beyond evaluation "
            f"noise (their paired 95% document-level interval lies above 0); {below} fell below the base beyond "
            f"noise, and {total - above - below} are within noise of it.")


def _base_line(summary: pd.DataFrame, reference: pd.DataFrame) -> str:
    if "base_rel_gain_best_single" not in reference:
        return ""
    line = reference[reference.reference == "best_single"].dropna(subset=["base_rel_gain_best_single"])
    if line.empty:
        return ""
    at = {(r.base, int(r.k)): r.base_rel_gain_best_single for r in line.itertuples(index=False)}
    rel = summary.assign(line=[at.get((b, int(k)), np.nan) for b, k in zip(summary.base, summary.k)])
    rel = rel.dropna(subset=["line", "rel_gain_best_single_mean"])
    positive = rel[rel.rel_gain_best_single_mean > 0]
    under = int((positive.rel_gain_best_single_mean < positive.line).sum())
    above = int((rel.rel_gain_best_single_mean > rel.line).sum())
    lo, hi = line.base_rel_gain_best_single.min(), line.base_rel_gain_best_single.max()
    span = f"{lo:+.3f} at every k" if lo == hi else f"{lo:+.3f} to {hi:+.3f} across k"
    return (f"- Returning the base unchanged has a relative gain over the best single of {span} "
            f"(`reference.csv`, the dashed red line of the relative figures). {len(positive)} of {len(rel)} rows have "
            f"a positive mean relative gain; {under} of those lie under the base line (better than their best "
            f"single, worse than not merging). {above} rows lie above it.")


def _normalised_line(summary: pd.DataFrame, reference: pd.DataFrame, labels: dict[str, str]) -> str:
    norm = summary.dropna(subset=["normalised_mean"])
    if norm.empty:
        return ("- Normalised score: no checkpoint names its own task (only the zoo's experts do), so none is "
                "computed.")
    out = []
    for base, g in norm.groupby("base", sort=True):
        enough = g[g.n_subsets >= SMALL_N]
        k = int((enough if not enough.empty else g).k.max())
        at = g[g.k == k].sort_values("normalised_mean", ascending=False).iloc[0]
        ref = reference[(reference.base == base) & (reference.k == k)].get("base_normalised", pd.Series(dtype=float))
        known = len(ref) and not np.isnan(ref.iloc[0])
        base_part = f"; the base returned unchanged scores {ref.iloc[0]:.3f}" if known else ""
        out.append(f"{base} at k = {k}: best {_name(labels, at.method, at.params)}, {at.normalised_mean:.3f} "
                   f"[{at.normalised_ci_low:.3f}, {at.normalised_ci_high:.3f}] over {int(at.n_subsets)} subsets"
                   f"{base_part}")
    return ("- Normalised score (merged ÷ each expert on its own task; 1 keeps every expert's own-task score): "
            + "; ".join(out) + ".")


def _paired_lines(paired: pd.DataFrame, labels: dict[str, str], top: int = 3) -> list[str]:
    if paired.empty:
        return ["- Paired comparisons: no two series share a counted subset."]
    sig = paired[paired.significant]
    head = (f"- Paired comparisons on shared subsets (`paired.csv`; Holm within each (base, k)): {len(sig)} of "
            f"{len(paired)} pairs differ at 5%")
    if sig.empty:
        return [head + "; no series differs from another beyond what the resampled subsets and documents explain."]
    lines = [head + ". Largest significant differences:"]
    for r in sig.reindex(sig.mean_diff.abs().sort_values(ascending=False).index).head(top).itertuples(index=False):
        a, b = _name(labels, r.method_a, r.params_a), _name(labels, r.method_b, r.params_b)
        hi_, lo_ = (a, b) if r.mean_diff > 0 else (b, a)
        # the interval of hi_ minus lo_, so it has the sign of the sentence ("above by 0.39, [+0.34, +0.45]")
        low, high = (r.ci_low, r.ci_high) if r.mean_diff > 0 else (-r.ci_high, -r.ci_low)
        lines.append(f"- {r.base}, k = {r.k}: {hi_} above {lo_} by {abs(r.mean_diff):.4f} "
                     f"(interval of the difference [{low:+.4f}, {high:+.4f}], Holm p = {r.p_holm:.4f}, "
                     f"{r.n_subsets} subsets{', small n' if r.small_n else ''}).")
    leaders = _leaders(paired)
    if leaders:
        lines.append("- Ahead of every other series, significantly after Holm: "
                     + "; ".join(f"{b}, k = {k}: {_name(labels, m, p)}" for b, k, m, p in leaders) + ".")
    return lines


def _leaders(paired: pd.DataFrame) -> list[tuple[str, int, str, str]]:
    """(base, k, method, params) of each series significantly above every other series at its (base, k)."""
    out = []
    for (base, k), g in paired.groupby(["base", "k"], sort=True):
        series = set(zip(g.method_a, g.params_a)) | set(zip(g.method_b, g.params_b))
        for s in sorted(series):
            rows = g[((g.method_a == s[0]) & (g.params_a == s[1])) | ((g.method_b == s[0]) & (g.params_b == s[1]))]
            sign = np.where((rows.method_a == s[0]) & (rows.params_a == s[1]), 1.0, -1.0)
            if len(rows) == len(series) - 1 > 0 and bool((rows.significant & (sign * rows.mean_diff > 0)).all()):
                out.append((base, int(k), *s))
    return out


def support_section(summary: pd.DataFrame, reference: pd.DataFrame, paired: pd.DataFrame,
                    findings: pd.DataFrame, labels: dict[str, str]) -> str:
    """The report's "What the intervals support" section."""
    head = ("## What the intervals support\n\nGenerated from the tables next to this report; no sentence is written "
            "by hand.")
    if summary.empty:
        return head + "\n\nNo merge has been counted yet: nothing to support."
    lines = _gain_lines(summary, labels) + [_noise_line(summary)]
    lines += [x for x in (_base_line(summary, reference), _normalised_line(summary, reference, labels)) if x]
    lines += _paired_lines(paired, labels)
    lines.append(f"- Findings meant to hold together (simultaneous 95%, `findings.csv`): {len(findings)}.")
    note = small_n_note(summary)
    return head + "\n\n" + "\n".join(lines) + (f"\n\n{note}" if note else "")
