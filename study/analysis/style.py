"""One visual style for every figure: a series is told apart by marker and line style, not by colour alone.

Papers are printed and read in greyscale, so each (method, params) series gets a unique marker and line
style; colours come from viridis, whose luminance rises monotonically, so they stay distinct in grey too. The
plain dashed line is reserved for references (the mean best single, and the output ensemble), which no merge
series uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

ENSEMBLE = "ensemble"
MARKERS = ["o", "s", "^", "D", "v", "P", "*", "h", "<", ">", "p", "8", "d", "H"]
LINESTYLES: list[Any] = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 1, 1, 1)), (0, (8, 2, 1, 2)),
                         (0, (2, 2, 6, 2)), (0, (4, 1, 1, 1, 1, 1, 1, 1)), (0, (10, 3))]
DASHED = "--"


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn; ``as_kwargs`` feeds ``Axes.plot``."""

    color: Any
    marker: str
    linestyle: Any
    linewidth: float = 1.6

    def as_kwargs(self) -> dict[str, Any]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle,
                "linewidth": self.linewidth, "markersize": 5}


ENSEMBLE_STYLE = SeriesStyle(color="black", marker="X", linestyle=DASHED, linewidth=1.4)
BEST_SINGLE_STYLE = SeriesStyle(color="0.45", marker="", linestyle=DASHED, linewidth=1.2)
SINGLE_POINT_STYLE = SeriesStyle(color="0.45", marker="D", linestyle="none")
BASE_STYLE = SeriesStyle(color="#b2182b", marker="", linestyle=DASHED, linewidth=1.6)
"""Where returning the base unchanged lies: the same dark red dashed line, labelled, in every figure of a score
relative to something (gain over the base, relative gain over the best single, normalised score)."""


def series_key(method: str, params: str) -> str:
    """The key of one curve: a method and its grid point as written (``params`` is canonical JSON)."""
    return f"{method} {params}"


def series_label(label: str, params: str) -> str:
    """``task_arithmetic (lambda=1/k)``: the figure legend's name for a series."""
    values = json.loads(params)
    if not values:
        return label
    return f"{label} ({', '.join(f'{k}={v}' for k, v in values.items())})"


def series_styles(keys: list[str]) -> dict[str, SeriesStyle]:
    """A style per series key, assigned in sorted order so a series looks the same in every figure.

    Ensemble series get the reference style; every other series a unique (marker, line style) pair as long
    as there are fewer series than markers (14).
    """
    merges = sorted(k for k in set(keys) if not k.startswith(f"{ENSEMBLE} "))
    colours = sns.color_palette("viridis", max(len(merges), 1))
    styles = {}
    for i, key in enumerate(merges):
        styles[key] = SeriesStyle(color=colours[i], marker=MARKERS[i % len(MARKERS)],
                                  linestyle=LINESTYLES[i % len(LINESTYLES)])
    for key in keys:
        if key.startswith(f"{ENSEMBLE} "):
            styles[key] = ENSEMBLE_STYLE
    return styles


def apply_theme() -> None:
    """White grid, paper context, fonts large enough to read a figure at column width."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "legend.frameon": False,
                         "pdf.fonttype": 42})


def save_figure(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """PNG (for report.md) and PDF (for a paper, without a creation date so a rebuild is identical), then close."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0])
    fig.savefig(paths[1], metadata={"CreationDate": None})
    plt.close(fig)
    return paths
