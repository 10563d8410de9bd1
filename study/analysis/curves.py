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
from study.analysis.measures import SMALL_N
from study.analysis.paired import difference_matrix
from study.analysis.style import (BASE_STYLE, BEST_SINGLE_STYLE, SINGLE_POINT_STYLE, SeriesStyle, series_key,
                                  series_label, series_styles)
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
        ax.axhline(0.0, label="base returned unchanged", **_line(BASE_STYLE))
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


def _line(style: SeriesStyle) -> dict[str, Any]:
    """A reference line's keywords (no marker), for ``axhline`` and ``plot`` alike."""
    return {"color": style.color, "linestyle": style.linestyle, "linewidth": style.linewidth}


def _base_line(ax: Any, reference: pd.DataFrame | None, base: str, column: str) -> list[int]:
    """The base-unchanged line of a relative figure: ``column`` of ``reference.csv`` against k (k = 1 included:
    the base against a single checkpoint); the ks it covers."""
    if reference is None or column not in reference:
        return []
    ref = reference[(reference.base == base)].sort_values("k").dropna(subset=[column])
    if not ref.empty:
        ax.plot(ref.k, ref[column], label="base returned unchanged", **_line(BASE_STYLE))
    return list(ref.k)


def rel_gain_curves(summary: pd.DataFrame, labels: dict[str, str], reference: pd.DataFrame | None = None) -> Any:
    """Figure 3: relative gain over the best single checkpoint. Above 0 the merge beats its best single, yet
    below the base line (dashed red, from ``reference``) it is still worse than not merging: when every expert
    scores below the base, returning the base unchanged already has a positive relative gain, so merely
    shrinking towards the base looks like constructive interference."""
    bases = sorted(set(summary.base))
    styles = _styles(summary)
    fig, axes = _panels(bases)
    for ax, base in zip(axes, bases):
        part = summary[summary.base == base]
        ax.axhline(0.0, color="black", linewidth=0.9)
        ks = _base_line(ax, reference, base, "base_rel_gain_best_single")
        _series(part, "rel_gain_best_single_mean", labels, styles, ax,
                ("rel_gain_best_single_ci_low", "rel_gain_best_single_ci_high"))
        ax.set(title=base, xlabel="k (checkpoints merged)", ylabel="relative gain over best single")
        _integer_ks(ax, list(part.k) + ks)
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


def normalised_curves(summary: pd.DataFrame, reference: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 6: the normalised score (merged / each expert on its own task, averaged over the subset's experts)
    against k. 1 (solid grey) is every expert's own-task score kept; the dashed red line is the base's."""
    part = summary.dropna(subset=["normalised_mean"])
    bases = sorted(set(part.base))
    styles = _styles(part)
    fig, axes = _panels(bases)
    for ax, base in zip(axes, bases):
        mine = part[part.base == base]
        ax.axhline(1.0, color="0.45", linewidth=1.0, label="experts on their own tasks (1)")
        ks = _base_line(ax, reference, base, "base_normalised")
        _series(mine, "normalised_mean", labels, styles, ax, ("normalised_ci_low", "normalised_ci_high"))
        ax.set(title=base, xlabel="k (checkpoints merged)", ylabel="normalised score (merged / expert)")
        _integer_ks(ax, list(mine.k) + ks)
    _legend(fig, axes)
    return fig


def paired_matrix(paired: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 7: per (base, k), the mean paired difference avg(row) - avg(column) over shared subsets, coloured
    (red: the row scores higher), with * where it is significant after Holm within the panel. Rows are numbered;
    columns carry the same numbers, so a panel stays compact with many series."""
    keys = sorted({series_key(m, p) for m, p in zip(paired.method_a, paired.params_a)}
                  | {series_key(m, p) for m, p in zip(paired.method_b, paired.params_b)})
    panels = sorted({(b, int(k)) for b, k in zip(paired.base, paired.k)})
    names = [f"{i + 1}. {series_label(labels.get(key, key.split(' ', 1)[0]), key.split(' ', 1)[1])}"
             for i, key in enumerate(keys)]
    ncols = min(3, max(len(panels), 1))
    nrows = -(-max(len(panels), 1) // ncols)
    side = 0.9 + 0.32 * len(keys)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 1.6, side * nrows + 0.4), squeeze=False)
    limit = float(np.nanmax(np.abs(paired.mean_diff))) if len(paired) else 1.0
    image = None
    for n, ax in enumerate(axes.flat):
        if n >= len(panels):
            ax.set_visible(False)
            continue
        base, k = panels[n]
        diff, sig = difference_matrix(paired, base, k, keys)
        image = ax.imshow(diff, cmap="RdBu_r", vmin=-(limit or 1), vmax=limit or 1)
        for i, j in zip(*np.nonzero(sig)):
            dark = abs(diff[i, j]) > 0.6 * (limit or 1)
            ax.text(j, i, "*", ha="center", va="center", fontsize=9, fontweight="bold",
                    color="white" if dark else "black")
        shared = paired[(paired.base == base) & (paired.k == k)].n_subsets
        small = f" (n < {SMALL_N})" if shared.min() < SMALL_N else ""
        ax.set_title(f"{base}, k = {k}, n = {shared.max()}{small}", fontsize=9)
        ticks = range(len(keys))
        ax.set_xticks(ticks, [str(i + 1) for i in ticks], fontsize=7)
        ax.set_yticks(ticks, [names[i] if n % ncols == 0 else str(i + 1) for i in ticks], fontsize=7)
        ax.grid(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="mean avg(row) - avg(column)")
    return fig

