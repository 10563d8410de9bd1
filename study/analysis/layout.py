"""Figure layout: one panel per base in a grid, one legend per figure under the panels, and the share of the
figure the panels take.

A figure that is mostly legend is the first thing a reviewer sends back, so the legend is laid out in as many
columns as the figure's width holds and the figure grows by the legend's height instead of the panels
shrinking; ``plot_area_fraction`` measures the result (tests/test_figures.py holds every report figure, for one
and for four bases with twelve series, to at least 0.6).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt

PANEL = (3.9, 2.9)
"""Inches per panel: two columns of a paper page hold two panels side by side."""
LEGEND_FONT = 8.0
TARGET = 0.62
"""The share of the figure ``finish`` gives the panels (the tests ask for 0.6; the margin absorbs rounding)."""
GROW_MIN, GROW_MAX, GROW_STEPS = 1.05, 1.5, 10


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns for ``n`` panels: one row up to 3, 2 x 2 for 4, rows of 3 beyond."""
    n = max(n, 1)
    if n <= 3:
        return 1, n
    if n == 4:
        return 2, 2
    return math.ceil(n / 3), 3


def panel_grid(n: int, *, sharey: bool = True, panel: tuple[float, float] = PANEL) -> tuple[Any, list[Any]]:
    """A constrained-layout figure with ``n`` panels in ``grid_shape(n)``; cells beyond ``n`` are removed.

    The x axis (k) is always shared; ``sharey`` where the panels' values are on one scale (a gain, a share,
    a ratio), so bases compare at a glance. Tick labels show on the outer panels only, and on a panel with
    no panel below it.
    """
    nrows, ncols = grid_shape(n)
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), sharex=True,
                             sharey=sharey, squeeze=False, layout="constrained")
    flat = list(grid.flat)
    for ax in flat[max(n, 1):]:
        fig.delaxes(ax)
    axes = flat[:max(n, 1)]
    for i, ax in enumerate(axes):
        if i + ncols >= len(axes):  # nothing below: its k ticks are the ones read
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes


def outer_labels(axes: list[Any], xlabel: str, ylabel: str) -> None:
    """The x label on every panel with no panel below it, the y label on the first panel of each row."""
    ncols = grid_shape(len(axes))[1]
    for i, ax in enumerate(axes):
        ax.set(xlabel=xlabel if i + ncols >= len(axes) else "", ylabel=ylabel if i % ncols == 0 else "")


def _handles(axes: list[Any]) -> dict[str, Any]:
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    return handles


def _place_legend(fig: Any, handles: dict[str, Any], title: str, width: float) -> float:
    """The figure's legend under the panels in as many columns as ``width`` inches hold; its height (inches)."""
    renderer = fig.canvas.get_renderer()
    for legend in list(fig.legends):
        legend.remove()
    for ncol in range(len(handles), 0, -1):
        legend = fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol,
                            fontsize=LEGEND_FONT, title=title or None, title_fontsize=LEGEND_FONT,
                            columnspacing=1.2, handlelength=3.2, handletextpad=0.5, labelspacing=0.35,
                            borderaxespad=0.2)
        box = legend.get_window_extent(renderer)
        if box.width <= 0.98 * width * fig.dpi or ncol == 1:
            return box.height / fig.dpi + 0.1
        legend.remove()
    return 0.0


def finish(fig: Any, axes: list[Any], legend_title: str = "", target: float = TARGET, *,
           keep_aspect: bool = True, limit: tuple[float, float] | None = None) -> Any:
    """Lay ``fig`` out for print: one legend for all panels (each label once, in plotting order) under them,
    the figure taller by the legend's height; then, while the panels take less than ``target`` of the
    figure, the figure grows so that the margins' share shrinks.

    ``keep_aspect`` (curves with a legend): width and height grow together, so the legend gets more columns
    as well. Otherwise (heat maps, whose margins are label columns and title rows of fixed size) each
    dimension grows to where its margin takes 1 - sqrt(target) of it: of the figures that reach the target by
    growing, the smallest when both margins are thick (and no dimension is stretched to make up for the other).
    ``limit`` (inches): the figure grows no further, below the target if need be, so that a heat map of one
    task does not become a ribbon of one wide cell.
    """
    handles = _handles(axes)
    width, height = fig.get_size_inches()
    for _ in range(GROW_STEPS):
        extra = _place_legend(fig, handles, legend_title, width) if handles else 0.0
        fig.set_size_inches(width, height + extra)
        fraction = plot_area_fraction(fig)
        if fraction >= target:
            break
        if keep_aspect:
            grow = min(GROW_MAX, max(GROW_MIN, (target / fraction) ** 0.5))
            width, height = width * grow, height * grow
            continue
        along_x, along_y = _extents(fig)
        share = 1 - (target + 0.01) ** 0.5
        wider = max((1 - along_x) * width / share, width * GROW_MIN)
        taller = max((1 - along_y) * (height + extra) / share - extra, height * GROW_MIN)
        if limit is not None:
            wider, taller = min(wider, max(limit[0], width)), min(taller, max(limit[1], height))
            if (wider, taller) == (width, height):
                break
        width, height = wider, taller
    return fig


def _panels(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and not hasattr(ax, "_colorbar")]


def _extents(fig: Any) -> tuple[float, float]:
    """The share of the figure's width and of its height that the panels' columns and rows take."""
    boxes = [ax.get_position() for ax in _panels(fig)]
    return (sum({round(b.x0, 4): b.width for b in boxes}.values()),
            sum({round(b.y0, 4): b.height for b in boxes}.values()))


def plot_area_fraction(fig: Any) -> float:
    """Sum of the data panels' areas over the figure's area, after layout (colour bars are not panels)."""
    fig.canvas.draw()
    return float(sum(ax.get_position().width * ax.get_position().height for ax in _panels(fig)))
