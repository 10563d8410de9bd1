"""One visual style for every figure: a series is told apart by colour, line style and marker, never by colour alone.

Colours are Okabe & Ito's colour-blind-safe set (without black, which the references use). The line style says
the method's family (solid: task-vector family, dash-dot: subspace family, dotted: spherical, dash-dot-dot:
data-dependent), so a reader sees at a glance which kind of merge a curve is, and greyscale print still tells
families apart. Every merge series also gets its own marker. The plain dashed line is reserved for references
(the base, the mean best single, the output ensemble), which no merge series uses. With more series than
colours, a family's second line style takes over, so every series keeps a distinct (colour, line style) pair
as long as no family has more than 14 series.
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
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442"]
"""Okabe & Ito (2008) without black, ordered so that neighbours differ most; yellow, the faintest on white,
comes last."""
MARKERS = ["o", "s", "^", "D", "v", "P", "*", "X", "<", ">", "d", "p", "h", "H"]
"""Ordered so that markers that look alike at figure size (o/h/H/p) are far apart in the list."""
DASHED = "--"

TASK_VECTOR, SUBSPACE, SPHERICAL, DATA, OTHER, REFERENCE = (
    "task-vector", "subspace", "spherical", "data-dependent", "other", "reference")
FUSION = "fusion"
"""Knowledge fusion (``fusion:<name>`` series, ``study.fusion``): trained, not merged, so a family of its own."""
FAMILY_OF: dict[str, str] = {
    **{m: TASK_VECTOR for m in ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
                                "breadcrumbs_ties", "della", "della_linear", "sce", "model_stock")},
    **{m: SUBSPACE for m in ("tsv_merge", "iso_c", "iso_cts", "subspace_boosting")},
    **{m: SPHERICAL for m in ("slerp", "nuslerp", "multislerp", "karcher")},
    **{m: DATA for m in ("fisher", "regmean", "aim")},
    ENSEMBLE: REFERENCE,
}
"""Each built-in method's family (docs/methods.md); a method not listed here (a plugin) is ``other``."""
FAMILY_ORDER = [TASK_VECTOR, SUBSPACE, SPHERICAL, DATA, OTHER, FUSION, REFERENCE]
FAMILY_LINESTYLES: dict[str, list[Any]] = {
    TASK_VECTOR: ["-", (0, (9, 1.5))],
    SUBSPACE: ["-.", (0, (9, 1.5, 1.5, 1.5))],
    SPHERICAL: [":", (0, (1, 3))],
    DATA: [(0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (9, 1.5, 1, 1.5, 1, 1.5))],
    OTHER: [(0, (3, 3, 1, 3)), (0, (1, 1, 1, 4))],
    FUSION: [(0, (6, 2, 1, 2, 1, 2, 1, 2)), (0, (12, 2, 1, 2))],
}
"""A family's line styles: the first for its first 7 series, the second for the next 7; none is dashed."""
FAMILY_WORDS = {TASK_VECTOR: "solid", SUBSPACE: "dash-dot", SPHERICAL: "dotted", DATA: "dash-dot-dot",
                OTHER: "loose dash-dot", FUSION: "dash-dot-dot-dot", REFERENCE: "dashed"}


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


def family(method: str) -> str:
    """The family a method's curves are drawn in (``FAMILY_OF``; ``fusion`` for ``fusion:<name>``; ``other`` for a
    method not listed)."""
    if method.startswith("fusion:"):
        return FUSION
    return FAMILY_OF.get(method, OTHER)


def _number(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def compact_value(value: Any) -> str:
    """A grid value as a legend shows it: ``{gradient: [0.9, 0.4]}`` as ``grad[0.9→0.4]``, mergekit's filter
    conditions as ``[self_attn:0.3, mlp:0.9→0.4, *:0.5]`` (``*``: the catch-all), a list as ``[a, b]``."""
    if isinstance(value, dict) and set(value) == {"gradient"}:
        return f"grad[{'→'.join(_number(v) for v in value['gradient'])}]"
    if isinstance(value, dict) and set(value) == {"filters"}:
        parts = []
        for cond in value["filters"]:
            inner = cond.get("value")
            shown = "→".join(_number(v) for v in inner) if isinstance(inner, list) else _number(inner)
            parts.append(f"{cond.get('filter') or '*'}:{shown}")
        return f"[{', '.join(parts)}]"
    if isinstance(value, list):
        return f"[{', '.join(compact_value(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}:{compact_value(v)}" for k, v in value.items()) + "}"
    return _number(value)


def series_label(label: str, params: str) -> str:
    """``task_arithmetic (lambda=1/k)``, ``ties (density=grad[0.9→0.4])``: the legend's and tables' name of a
    series (``compact_value`` writes each value)."""
    values = json.loads(params)
    if not values:
        return label
    return f"{label} ({', '.join(f'{k}={compact_value(v)}' for k, v in values.items())})"


def series_order(keys: list[str]) -> list[str]:
    """Series keys by family (``FAMILY_ORDER``), then by key: the order of styles and of every legend."""
    def rank(key: str) -> tuple[int, str]:
        return FAMILY_ORDER.index(family(key.split(" ", 1)[0])), key

    return sorted(set(keys), key=rank)


def series_styles(keys: list[str]) -> dict[str, SeriesStyle]:
    """A style per series key, assigned in ``series_order`` so a series looks the same in every figure.

    Ensemble series get the reference style. Merge series number 0, 1, ... across families: series i gets
    colour i mod 7 and marker (i + i div 7) mod 14; the j-th series of its family gets the family's line style
    number (j div 7). Two series with the same colour are 7m apart and their markers 8m apart (mod 14), so every
    (colour, marker) pair is distinct up to 49 series; besides, in different families their line styles differ,
    in one family (its series are consecutive) the second style tells them apart, so every (colour, line style)
    pair is distinct while no family has more than 14 series, and a family of up to 7 series is drawn in one
    line style.
    """
    styles = {}
    merges = [k for k in series_order(keys) if family(k.split(" ", 1)[0]) != REFERENCE]
    seen: dict[str, int] = {}
    for i, key in enumerate(merges):
        fam = family(key.split(" ", 1)[0])
        j = seen[fam] = seen.get(fam, -1) + 1
        lines = FAMILY_LINESTYLES[fam]
        marker = MARKERS[(i + i // len(OKABE_ITO)) % len(MARKERS)]
        styles[key] = SeriesStyle(color=OKABE_ITO[i % len(OKABE_ITO)], marker=marker,
                                  linestyle=lines[(j // len(OKABE_ITO)) % len(lines)])
    for key in keys:
        if family(key.split(" ", 1)[0]) == REFERENCE:
            styles[key] = ENSEMBLE_STYLE
    return styles


def families_note(keys: list[str], references: bool = False) -> str:
    """The legend's title: which line style is which family, for the families among ``keys``, and the
    references' dashes where ``references`` (reference lines drawn) or an ensemble is among ``keys``."""
    present = {family(k.split(" ", 1)[0]) for k in keys} | ({REFERENCE} if references else set())
    return "   ".join(f"{FAMILY_WORDS[f]}: {f}" + ("s" if f == REFERENCE else "")
                       for f in FAMILY_ORDER if f in present)


def apply_theme() -> None:
    """White grid, paper context, fonts large enough to read a figure at column width; SVG ids from a fixed
    salt and no dates in PDF/SVG, so a rebuild writes identical files."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "legend.frameon": False,
                         "pdf.fonttype": 42, "svg.hashsalt": "merge-study"})


FORMATS = ("png", "pdf", "svg")


def save_figure(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """PNG (for report.md and report.html), PDF and SVG (for a paper), without creation dates so a rebuild is
    identical; then close."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in FORMATS]
    fig.savefig(paths[0])
    fig.savefig(paths[1], metadata={"CreationDate": None})
    fig.savefig(paths[2], metadata={"Date": None})
    plt.close(fig)
    return paths
