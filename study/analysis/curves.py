"""The report's figures, drawn from the tidy tables (summary, reference, task gains, lengths, paired).

Each function returns a matplotlib figure with one panel per base in a grid (``layout.panel_grid``: up to
three in a row, 2 x 2 for four bases), a shared k axis, a shared y axis wherever the bases' values are on one
scale, and one legend under the panels; ``study.analysis.style`` decides how every series looks, so a method
has the same colour, line style and marker in every figure. Bands are the seeded bootstrap intervals over
subsets from ``summary.csv``.
"""

from __future__ import annotations

from itertools import product
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.analysis.layout import finish, grid_shape, outer_labels, panel_grid
from study.analysis.lengths import AVG_TASK
from study.analysis.measures import SMALL_N
from study.analysis.paired import difference_matrix
from study.analysis.style import (BASE_STYLE, BEST_SINGLE_STYLE, DASHED, SINGLE_POINT_STYLE, SeriesStyle,
                                  families_note, series_key, series_label, series_order, series_styles)
from study.plan import BASE, SINGLE

K_AXIS = "k (checkpoints merged)"
MAX_CELL = (1.5, 0.6)
"""The widest and tallest a heat map's cell grows (inches) to give its panels their share of the figure."""


def _keys(frame: pd.DataFrame) -> list[str]:
    return [series_key(m, p) for m, p in zip(frame.method, frame.params)]


def _legend(fig: Any, axes: list[Any], keys: list[str], references: bool = True) -> None:
    finish(fig, axes, families_note(keys, references))


def _name(key: str, labels: dict[str, str]) -> str:
    method, params = key.split(" ", 1)
    return series_label(labels.get(key, method), params)


def _two_lines(name: str, width: int = 24) -> str:
    """A long series name as the method over its grid point, so a heat map's row names stay a narrow column."""
    head, sep, rest = name.partition(" (")
    return f"{head}\n({rest}" if sep and len(name) > width else name


def _label_inches(names: list[str], points: float = 7) -> float:
    """About how wide a column of tick labels at ``points`` is (its longest line), to size a figure before
    layout: a figure narrower than its labels collapses under constrained layout."""
    longest = max((len(line) for name in names for line in name.splitlines()), default=0)
    return longest * points * 0.6 / 72 + 0.2


def _task_ticks(ax: Any, tasks: list[str], cell_inches: float) -> None:
    """Task names under the columns: level when the longest fits its cell at 7 pt, slanted otherwise."""
    level = max((len(t) for t in tasks), default=0) * 7 * 0.6 / 72 <= cell_inches
    ax.set_xticks(np.arange(len(tasks)) + 0.5, tasks, fontsize=7, rotation=0 if level else 35,
                  ha="center" if level else "right", rotation_mode="anchor")


def _series(frame: pd.DataFrame, y: str, labels: dict[str, str], styles: dict[str, SeriesStyle], ax: Any,
            band: tuple[str, str] | None) -> None:
    groups = {series_key(m, p): g for (m, p), g in frame.groupby(["method", "params"], sort=False)}
    for key in series_order(list(groups)):
        g = groups[key].sort_values("k")
        st = styles[key]
        ax.plot(g.k, g[y], label=_name(key, labels), **st.as_kwargs())
        if band is not None:
            ax.fill_between(g.k, g[band[0]], g[band[1]], color=st.color, alpha=0.12, linewidth=0)


def _styles(summary: pd.DataFrame) -> dict[str, SeriesStyle]:
    return series_styles(_keys(summary))


def _integer_ks(ax: Any, ks: Any) -> None:
    ks = sorted(set(int(k) for k in ks))
    if ks:
        ax.set_xticks(ks)


def gain_curves(summary: pd.DataFrame, reference: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 1: gain over the base against k; dashed: the mean best single of the same subsets."""
    bases = sorted(set(summary.base) | set(reference.base))
    styles = _styles(summary)
    fig, axes = panel_grid(len(bases))
    ks: list[int] = []
    for ax, base in zip(axes, bases):
        ax.axhline(0.0, label="base returned unchanged", **_line(BASE_STYLE))
        ref = reference[reference.base == base].sort_values("k")
        if not ref.empty:
            ax.plot(ref.k, ref.gain_mean, label="best single (mean)", **BEST_SINGLE_STYLE.as_kwargs())
            one = ref[ref.reference == "single"]
            ax.errorbar(one.k, one.gain_mean, yerr=[one.gain_mean - one.gain_ci_low, one.gain_ci_high - one.gain_mean],
                        label="single checkpoint (mean)", capsize=3, **SINGLE_POINT_STYLE.as_kwargs())
        _series(summary[summary.base == base], "gain_mean", labels, styles, ax, ("gain_ci_low", "gain_ci_high"))
        ax.set_title(base)
        ks += list(summary[summary.base == base].k) + list(ref.k)
    _integer_ks(axes[0], ks)
    outer_labels(axes, K_AXIS, "gain over base (avg. score)")
    _legend(fig, axes, _keys(summary))
    return fig


def p_beat_curves(summary: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 2: P(merged > base) against k, with its bootstrap band."""
    bases = sorted(set(summary.base))
    styles = _styles(summary)
    fig, axes = panel_grid(len(bases))
    for ax, base in zip(axes, bases):
        part = summary[summary.base == base]
        _series(part, "p_beat_base", labels, styles, ax, ("p_beat_base_ci_low", "p_beat_base_ci_high"))
        ax.set(title=base, ylim=(-0.03, 1.03))
    _integer_ks(axes[0], summary.k)
    outer_labels(axes, K_AXIS, "P(merged > base)")
    _legend(fig, axes, _keys(summary), references=False)
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


def _relative_curves(part: pd.DataFrame, reference: pd.DataFrame | None, labels: dict[str, str], measure: str,
                     base_column: str, level: dict[str, Any], ylabel: str) -> Any:
    """A measure relative to a level against k (figures 3 and 6): per base, the horizontal line ``level``
    (``axhline``'s keywords), the base-unchanged line from ``reference``'s ``base_column`` and every series'
    ``<measure>_mean`` with its ``_ci_low``/``_ci_high`` band."""
    bases = sorted(set(part.base))
    styles = _styles(part)
    fig, axes = panel_grid(len(bases))
    ks: list[int] = []
    for ax, base in zip(axes, bases):
        mine = part[part.base == base]
        ax.axhline(**level)
        ks += _base_line(ax, reference, base, base_column) + list(mine.k)
        _series(mine, f"{measure}_mean", labels, styles, ax, (f"{measure}_ci_low", f"{measure}_ci_high"))
        ax.set_title(base)
    _integer_ks(axes[0], ks)
    outer_labels(axes, K_AXIS, ylabel)
    _legend(fig, axes, _keys(part))
    return fig


def rel_gain_curves(summary: pd.DataFrame, labels: dict[str, str], reference: pd.DataFrame | None = None) -> Any:
    """Figure 3: relative gain over the best single checkpoint. Above 0 the merge beats its best single, yet
    below the base line (dashed red, from ``reference``) it is still worse than not merging: when every expert
    scores below the base, returning the base unchanged already has a positive relative gain, so merely
    shrinking towards the base looks like constructive interference."""
    return _relative_curves(summary, reference, labels, "rel_gain_best_single", "base_rel_gain_best_single",
                            {"y": 0.0, "color": "black", "linewidth": 0.9}, "relative gain over best single")


def largest_k_gains(task_gains: pd.DataFrame) -> pd.DataFrame:
    """The per-task gains at each base's largest k (the heat map's data)."""
    if task_gains.empty:
        return task_gains
    top = task_gains.groupby("base").k.transform("max")
    return task_gains[task_gains.k == top]


def task_heatmap(task_gains: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 4: series x task gain over the base at each base's largest k, one panel per base on one colour
    scale (one colour bar); rows in legend order and the same in every panel, so their names are written once,
    left of the grid. Numbers are printed, so greyscale is fine."""
    data = largest_k_gains(task_gains)
    bases = sorted(set(data.base))
    keys = series_order(_keys(data))
    tasks = sorted(set(data.task))
    rows, cols = len(keys) or 1, len(tasks) or 1
    limit = float(np.nanmax(np.abs(data.gain))) if len(data) else 1.0
    cell = 0.85
    names = [_two_lines(_name(k, labels)) for k in keys]
    margin = (_label_inches(names) + 0.8) / grid_shape(len(bases))[1]  # row names and colour bar, once per row
    fig, axes = panel_grid(len(bases), panel=(cell * cols + margin, 0.3 * rows + 0.8))
    image = None
    for ax, base in zip(axes, bases):
        part = data[data.base == base]
        grid = (part.assign(series=_keys(part)).pivot_table(index="series", columns="task", values="gain",
                                                            aggfunc="first").reindex(index=keys, columns=tasks))
        sns.heatmap(grid, ax=ax, cmap="RdBu", center=0.0, vmin=-(limit or 1), vmax=limit or 1, annot=True,
                    fmt="+.2f", annot_kws={"size": 7}, cbar=False, linewidths=0.5, xticklabels=False,
                    yticklabels=False)  # ticks below: seaborn draws the figure once, at its own label size
        image = ax.collections[0]
        ax.set(title=f"{base}, k = {int(part.k.iloc[0])}", xlabel="", ylabel="")
        ax.set_yticks(np.arange(rows) + 0.5, names, fontsize=7, rotation=0)
        _task_ticks(ax, tasks, cell)
        ax.grid(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.9, aspect=40, pad=0.01, label="gain over base")
    nrows, ncols = grid_shape(len(bases))
    return finish(fig, axes, keep_aspect=False, limit=(ncols * cols * MAX_CELL[0] + margin * ncols,
                                                       nrows * (rows * MAX_CELL[1] + 0.8)))


def length_curves(lengths: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 5: mean tokens per response (mean over generation tasks) against k; base at 0, singles at 1.
    Bases tokenise differently, so each panel has its own y axis."""
    avg = lengths[lengths.task == AVG_TASK]
    merges = avg[~avg.method.isin([BASE, SINGLE])]
    bases = sorted(set(avg.base))
    styles = _styles(merges)
    fig, axes = panel_grid(len(bases), sharey=False)
    for ax, base in zip(axes, bases):
        part = avg[avg.base == base]
        ref = part[part.method.isin([BASE, SINGLE])].sort_values("k")
        ax.plot(ref.k, ref.mean_tokens, label="base (k = 0), singles (k = 1)", **SINGLE_POINT_STYLE.as_kwargs())
        _series(merges[merges.base == base], "mean_tokens", labels, styles, ax, None)
        ax.set_title(base)
    _integer_ks(axes[0], avg.k)
    outer_labels(axes, K_AXIS, "mean tokens per response")
    _legend(fig, axes, _keys(merges), references=False)
    return fig


def normalised_curves(summary: pd.DataFrame, reference: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 6: the normalised score (merged / each expert on its own task, averaged over the subset's experts)
    against k. 1 (dashed dark grey) is every expert's own-task score kept; the dashed red line is the base's."""
    return _relative_curves(summary.dropna(subset=["normalised_mean"]), reference, labels, "normalised",
                            "base_normalised", {"y": 1.0, "color": "0.2", "linestyle": DASHED, "linewidth": 1.0,
                                                "label": "experts on their own tasks (1)"},
                            "normalised score (merged / expert)")


def paired_matrix(paired: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Figure 7: per (base, k), the mean paired difference avg(row) - avg(column) over shared subsets, coloured
    (red: the row scores higher), with * where it is significant after Holm within the panel. A row of panels
    per base, a column per k; series are numbered in legend order and named once, left of each row, so a panel
    stays compact with many series."""
    keys = series_order([series_key(m, p) for m, p in zip(paired.method_a, paired.params_a)]
                        + [series_key(m, p) for m, p in zip(paired.method_b, paired.params_b)])
    bases, ks = sorted(set(paired.base)), sorted({int(k) for k in paired.k})
    names = [_two_lines(f"{i + 1}. {_name(key, labels)}") for i, key in enumerate(keys)]
    if len(bases) <= 1:  # one base: its ks wrap as panels do (2 x 2 for four)
        nrows, ncols = grid_shape(len(ks))
        cells = {(b, k): divmod(i, ncols) for i, (b, k) in enumerate(product(bases, ks))}
    else:
        nrows, ncols = len(bases), len(ks)
        cells = {(b, k): (r, c) for (r, b), (c, k) in product(enumerate(bases), enumerate(ks))}
    side = 0.4 + 0.3 * len(keys)
    fig, grid = plt.subplots(nrows, ncols, figsize=(side * ncols + _label_inches(names) + 0.8, (side + 0.3) * nrows),
                             sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    limit = float(np.nanmax(np.abs(paired.mean_diff))) if len(paired) else 1.0
    image, axes = None, []
    ticks = range(len(keys))
    for ax in grid.flat:
        ax.set_axis_off()
    for (base, k), (r, c) in cells.items():
        ax = grid[r, c]
        shared = paired[(paired.base == base) & (paired.k == k)].n_subsets
        if shared.empty:
            continue
        ax.set_axis_on()
        diff, sig = difference_matrix(paired, base, k, keys)
        image = ax.imshow(diff, cmap="RdBu_r", vmin=-(limit or 1), vmax=limit or 1, aspect="auto")
        for i, j in zip(*np.nonzero(sig)):
            dark = abs(diff[i, j]) > 0.6 * (limit or 1)
            ax.text(j, i, "*", ha="center", va="center", fontsize=9, fontweight="bold",
                    color="white" if dark else "black")
        small = f" (n < {SMALL_N})" if shared.min() < SMALL_N else ""
        ax.set_title(f"{base}, k = {k}, n = {shared.max()}{small}", fontsize=9)
        ax.set_xticks(ticks, [str(i + 1) for i in ticks], fontsize=7)
        ax.set_yticks(ticks, names, fontsize=7)
        ax.tick_params(labelbottom=True)
        ax.grid(False)
        axes.append(ax)
    if image is not None:
        fig.colorbar(image, ax=grid.ravel().tolist(), shrink=0.9, aspect=40, pad=0.01,
                     label="mean avg(row) - avg(column)")
    return finish(fig, axes, keep_aspect=False)
