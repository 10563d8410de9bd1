"""The report's figures, drawn from the tidy tables (summary, reference, task gains, lengths).

Each function returns a matplotlib figure with one panel per base; ``study.analysis.style`` decides how every
series looks, so a method has the same marker and line style in every figure. Bands are the seeded bootstrap
intervals over subsets from ``summary.csv``.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.analysis.lengths import AVG_TASK
from study.analysis.style import (BEST_SINGLE_STYLE, SINGLE_POINT_STYLE, SeriesStyle, series_key, series_label,
                                  series_styles)
from study.plan import BASE, SINGLE


def _panels(bases: list[str], width: float = 4.6, height: float = 3.4) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, max(len(bases), 1), figsize=(width * max(len(bases), 1), height), squeeze=False)
    return fig, list(axes[0])


def _legend(fig: Any, axes: list[Any]) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(3, len(labels)))


def _series(frame: pd.DataFrame, y: str, labels: dict[str, str], styles: dict[str, SeriesStyle], ax: Any,
            band: tuple[str, str] | None) -> None:
    for (method, params), g in frame.groupby(["method", "params"], sort=True):
        key = series_key(method, params)
        g = g.sort_values("k")
        st = styles[key]
        ax.plot(g.k, g[y], label=series_label(labels.get(key, method), params), **st.as_kwargs())
        if band is not None:
            ax.fill_between(g.k, g[band[0]], g[band[1]], color=st.color, alpha=0.12, linewidth=0)


def _styles(summary: pd.DataFrame) -> dict[str, SeriesStyle]:
    return series_styles([series_key(m, p) for m, p in zip(summary.method, summary.params)])


def _integer_ks(ax: Any, ks: Any) -> None:
    ks = sorted(set(int(k) for k in ks))
    if ks:
        ax.set_xticks(ks)


def gain_curves(summary: pd.DataFrame, reference: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 1: gain over the base against k; dashed: the mean best single of the same subsets."""
    bases = sorted(set(summary.base) | set(reference.base))
    styles = _styles(summary)
    fig, axes = _panels(bases)
    for ax, base in zip(axes, bases):
        ax.axhline(0.0, color="black", linewidth=0.9)
        ref = reference[reference.base == base].sort_values("k")
        if not ref.empty:
            ax.plot(ref.k, ref.gain_mean, label="best single (mean)", **BEST_SINGLE_STYLE.as_kwargs())
            one = ref[ref.reference == "single"]
            ax.errorbar(one.k, one.gain_mean, yerr=[one.gain_mean - one.gain_ci_low, one.gain_ci_high - one.gain_mean],
                        label="single checkpoint (mean)", capsize=3, **SINGLE_POINT_STYLE.as_kwargs())
        _series(summary[summary.base == base], "gain_mean", labels, styles, ax, ("gain_ci_low", "gain_ci_high"))
        ax.set(title=base, xlabel="k (checkpoints merged)", ylabel="gain over base (avg. score)")
        _integer_ks(ax, list(summary.k) + list(ref.k))
    _legend(fig, axes)
    return fig


def p_beat_curves(summary: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 2: P(merged > base) against k, with its bootstrap band."""
    bases = sorted(set(summary.base))
    styles = _styles(summary)
    fig, axes = _panels(bases)
    for ax, base in zip(axes, bases):
        part = summary[summary.base == base]
        _series(part, "p_beat_base", labels, styles, ax, ("p_beat_base_ci_low", "p_beat_base_ci_high"))
        ax.set(title=base, xlabel="k (checkpoints merged)", ylabel="P(merged > base)", ylim=(-0.03, 1.03))
        _integer_ks(ax, part.k)
    _legend(fig, axes)
    return fig


def rel_gain_curves(summary: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 3: relative gain over the best single checkpoint; above 0 is constructive interference."""
    bases = sorted(set(summary.base))
    styles = _styles(summary)
    fig, axes = _panels(bases)
    for ax, base in zip(axes, bases):
        part = summary[summary.base == base]
        ax.axhline(0.0, color="black", linewidth=0.9)
        _series(part, "rel_gain_best_single_mean", labels, styles, ax,
                ("rel_gain_best_single_ci_low", "rel_gain_best_single_ci_high"))
        ax.set(title=base, xlabel="k (checkpoints merged)", ylabel="relative gain over best single")
        _integer_ks(ax, part.k)
    _legend(fig, axes)
    return fig


def largest_k_gains(task_gains: pd.DataFrame) -> pd.DataFrame:
    """The per-task gains at each base's largest k (the heat map's data)."""
    if task_gains.empty:
        return task_gains
    top = task_gains.groupby("base").k.transform("max")
    return task_gains[task_gains.k == top]


def task_heatmap(task_gains: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 4: method x task gain over the base at the largest k; numbers printed, so greyscale is fine."""
    data = largest_k_gains(task_gains)
    bases = sorted(set(data.base))
    n_tasks = max(data.task.nunique(), 1)
    n_rows = max(data.groupby(["method", "params"]).ngroups, 1)
    fig, axes = plt.subplots(len(bases) or 1, 1, figsize=(4.5 + 0.8 * n_tasks, 1.4 + 0.5 * n_rows * max(len(bases), 1)),
                             squeeze=False)
    axes = list(axes[:, 0])
    for ax, base in zip(axes, bases):
        part = data[data.base == base].copy()
        part["series"] = [series_label(labels.get(series_key(m, p), m), p) for m, p in zip(part.method, part.params)]
        grid = part.pivot_table(index="series", columns="task", values="gain", aggfunc="first")
        limit = float(np.nanmax(np.abs(grid.values))) if grid.size else 1.0
        sns.heatmap(grid, ax=ax, cmap="RdBu", center=0.0, vmin=-limit or -1, vmax=limit or 1, annot=True,
                    fmt="+.2f", annot_kws={"size": 7}, cbar_kws={"label": "gain over base"}, linewidths=0.5)
        ax.set(title=f"{base}, k = {int(part.k.iloc[0])}", xlabel="task", ylabel="")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def length_curves(lengths: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 5: mean tokens per response (mean over generation tasks) against k; base at 0, singles at 1."""
    avg = lengths[lengths.task == AVG_TASK]
    merges = avg[~avg.method.isin([BASE, SINGLE])]
    bases = sorted(set(avg.base))
    styles = _styles(merges)
    fig, axes = _panels(bases)
    for ax, base in zip(axes, bases):
        part = avg[avg.base == base]
        ref = part[part.method.isin([BASE, SINGLE])].sort_values("k")
        ax.plot(ref.k, ref.mean_tokens, label="base (k = 0), singles (k = 1)", **SINGLE_POINT_STYLE.as_kwargs())
        _series(merges[merges.base == base], "mean_tokens", labels, styles, ax, None)
        ax.set(title=base, xlabel="k (checkpoints merged)", ylabel="mean tokens per response")
        _integer_ks(ax, part.k)
    _legend(fig, axes)
    return fig
