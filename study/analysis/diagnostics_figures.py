"""The interference diagnostics in the report: ``diagnostics.csv``, rank correlations with the gain, two figures.

Every merge cell's record carries its diagnostics (``study.diagnostics``, measured in the merge's own pass).
Here they meet the scores: does a merge gain less where its task vectors conflict more?

Columns of ``diagnostics.csv`` (one row per merge plan cell whose record carries diagnostics): the cell columns
of ``scores.parquet`` (``cell_id`` ... ``checkpoints``); ``counted`` and ``gain`` (avg(merge) - avg(base), as in
``summary.csv``'s subsets; NaN when the subset is not counted); then the whole model's diagnostics
(``study.diagnostics``): ``cosine_mean`` and ``cosine_min`` over pairs of task-vector cosines, ``sign_conflict``,
``subspace_overlap`` (mean over pairs and projections), ``effective_rank_merged`` and ``effective_rank_tasks``
(participation ratios, mean over projections), ``rank_ratio`` (their quotient), ``norm_ratio``
(||merged - base|| / sum_i ||tau_i||), ``sampled`` (some tensor's rows were sampled) and ``version`` (of the
definitions, ``study.diagnostics.DIAGNOSTICS_VERSION``; cached cells keep the version they were merged with).

Columns of ``diagnostics_spearman.csv`` (one row per (base, method, params) and diagnostic): ``n`` counted
subsets with both numbers (pooled over k >= 2), ``rho`` Spearman's rank correlation of the diagnostic with the
gain over the base (average ranks for ties; NaN with fewer than 3 subsets or a constant column),
``ci_low``/``ci_high`` its seeded 95% percentile bootstrap interval over those subsets (``N_BOOT`` resamples;
resamples with a constant column are left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm

from study.analysis.layout import finish
from study.analysis.measures import bootstrap_seed
from study.analysis.render import md_table
from study.analysis.style import (BASE_STYLE, apply_theme, save_figure, series_key, series_label,
                                  series_order, series_styles)
from study.analysis.tables import CELL_COLUMNS, cell_row
from study.diagnostics import RANK
from study.plan import BASE, ENSEMBLE, SINGLE

N_BOOT = 2000
DIAGNOSTIC_COLUMNS: dict[str, str] = {
    "cosine_mean": "mean over pairs of the whole-model task-vector cosine",
    "cosine_min": "smallest pairwise whole-model cosine",
    "sign_conflict": "share of entries top-20% for >= 2 task vectors whose top values have both signs",
    "subspace_overlap": f"mean over pairs and projections of ||V_i^T V_j||_F^2 / r (top-{RANK} right singular "
                        "subspaces)",
    "effective_rank_merged": "mean over projections of the participation ratio of merged - base",
    "effective_rank_tasks": "mean over projections and checkpoints of the participation ratio of tau_i",
    "rank_ratio": "effective_rank_merged / effective_rank_tasks (< 1: the merge concentrates its energy)",
    "norm_ratio": "||merged - base|| / sum_i ||tau_i|| over the whole model",
    "sampled": "True when some tensor was seen through a sample of its rows (then cosines and norms are estimates)",
    "version": "the definitions' version the record was measured with (study.diagnostics.DIAGNOSTICS_VERSION)",
}
SHOWN = [("cosine_mean", "task-vector cosine (mean)"), ("sign_conflict", "sign conflict (top 20%)"),
         ("subspace_overlap", f"subspace overlap (top {RANK})"), ("rank_ratio", "eff. rank: merged / tasks"),
         ("norm_ratio", "‖merged Δ‖ / Σ‖τ_i‖")]
FIGURES = [("diagnostics_gain", "Gain over the base against each interference diagnostic, one point per counted "
            "merge (all k); below each panel, per method, Spearman's ρ with its 95% bootstrap interval over those "
            "merges. Dashed red: the base returned unchanged. k moves both axes: read ρ with Figure 1."),
           ("diagnostics_layers", "Per-layer map at each base's largest k (mean over its merges): task-vector "
            "cosine, sign conflict and subspace overlap per layer and module (they depend on the subset only), "
            "and per layer and method the merged delta's norm ratio and effective-rank ratio.")]


def _label(key: str, labels: dict[str, str]) -> str:
    method, params = key.split(" ", 1)
    return series_label(labels.get(key, method), params)


def diagnostics_table(plan: Any, records: dict[str, Any], per_subset: pd.DataFrame) -> pd.DataFrame:
    """``diagnostics.csv``: each merge plan cell with diagnostics, its gain (if counted) and their scalars."""
    gains = {(r.cell_id, r.params): (bool(r.counted), r.gain) for r in per_subset.itertuples(index=False)}
    rows = []
    for cell in plan.cells:
        rec = records.get(cell.cell_id)
        if cell.method in (BASE, SINGLE, ENSEMBLE) or rec is None or getattr(rec, "diagnostics", None) is None:
            continue
        counted, gain = gains.get((cell.cell_id, cell.params_key), (False, np.nan))
        rows.append({**cell_row(cell), "counted": counted, "gain": gain if counted else np.nan,
                     **rec.diagnostics.scalars(), "sampled": rec.diagnostics.sampled,
                     "version": rec.diagnostics.version})
    frame = pd.DataFrame(rows, columns=[*CELL_COLUMNS, "counted", "gain", *DIAGNOSTIC_COLUMNS])
    return frame.astype({c: "float64" for c in DIAGNOSTIC_COLUMNS if c not in ("sampled", "version")}
                        | {"gain": "float64"})


def spearman(x: Any, y: Any) -> float:
    """Spearman's ρ (Pearson's r of average ranks); NaN with fewer than 3 pairs or a constant column."""
    ranks = pd.DataFrame({"x": x, "y": y}).rank()
    if len(ranks) < 3 or ranks.x.nunique() < 2 or ranks.y.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(ranks.x, ranks.y)[0, 1])


def spearman_ci(x: Any, y: Any, seed: int, n_boot: int = N_BOOT) -> tuple[float, float]:
    """Seeded 95% percentile interval of ρ, resampling the (x, y) pairs; NaN when ρ is undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.isnan(spearman(x, y)):
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    rx, ry = pd.DataFrame(x[idx]).rank(axis=1).to_numpy(), pd.DataFrame(y[idx]).rank(axis=1).to_numpy()
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    rho = (rx * ry).sum(1)[den > 0] / den[den > 0]
    if len(rho) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(rho, [0.025, 0.975])
    return float(lo), float(hi)


def spearman_table(table: pd.DataFrame, sweep_seed: int) -> pd.DataFrame:
    """``diagnostics_spearman.csv``: ρ of each shown diagnostic with the gain, per (base, method, params)."""
    rows = []
    counted = table[table.counted & table.gain.notna()]
    for (base, method, params), g in counted.groupby(["base", "method", "params"], sort=True):
        for col, _ in SHOWN:
            ok = g[[col, "gain"]].dropna()
            lo, hi = spearman_ci(ok[col], ok.gain, bootstrap_seed(sweep_seed, "diagnostics", base, method, params, col))
            rows.append({"base": base, "method": method, "params": params, "diagnostic": col, "n": len(ok),
                         "rho": spearman(ok[col], ok.gain), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["base", "method", "params", "diagnostic", "n", "rho", "ci_low", "ci_high"])


def _with_series(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(series=[series_key(m, p) for m, p in zip(frame.method, frame.params)])


def gain_figure(table: pd.DataFrame, rhos: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Per base two rows of panels, one column per diagnostic: the scatter of gain against it, and per series
    Spearman's ρ with its interval (series top to bottom in legend order)."""
    counted = _with_series(table[table.counted & table.gain.notna()])
    rhos = _with_series(rhos)
    bases = sorted(set(counted.base))
    keys = series_order(list(counted.series))
    styles = series_styles(keys)
    n = len(SHOWN)
    forest_h = 0.35 + 0.16 * len(keys)
    fig, grid = plt.subplots(2 * len(bases), n, figsize=(2.6 * n, len(bases) * (3.6 + 1.5 * forest_h) + 0.8),
                             squeeze=False, gridspec_kw={"height_ratios": [2.3, forest_h] * len(bases)},
                             layout="constrained")
    for b, base in enumerate(bases):
        part = counted[counted.base == base]
        for c, (col, title) in enumerate(SHOWN):
            ax, forest = grid[2 * b, c], grid[2 * b + 1, c]
            ax.axhline(0.0, color=BASE_STYLE.color, linestyle=BASE_STYLE.linestyle, linewidth=1.2,
                       label="base returned unchanged")
            for i, key in enumerate(keys):
                g = part[part.series == key]
                st = styles[key]
                ax.scatter(g[col], g.gain, s=16, marker=st.marker, color=st.color, alpha=0.85, linewidths=0.3,
                           edgecolors="white", label=_label(key, labels))
                r = rhos[(rhos.base == base) & (rhos.diagnostic == col) & (rhos.series == key)]
                if len(r) and not np.isnan(r.rho.iloc[0]):
                    rho, lo, hi = r.rho.iloc[0], r.ci_low.iloc[0], r.ci_high.iloc[0]
                    err = [[rho - lo], [hi - rho]] if not np.isnan(lo) else None
                    forest.errorbar([rho], [i], xerr=err, fmt=st.marker, color=st.color, markersize=4, capsize=2,
                                    linewidth=1)
            ax.set_title(f"{base}: {title}" if len(bases) > 1 else title, fontsize=9)
            ax.set_ylabel("gain over base" if c == 0 else "")
            forest.axvline(0.0, color="0.5", linewidth=0.8)
            forest.set(xlim=(-1.05, 1.05), ylim=(len(keys) - 0.5, -0.5), yticks=[])
            forest.set_xlabel("Spearman ρ with gain", fontsize=8)
            forest.tick_params(labelsize=7)
            ax.tick_params(labelsize=7)
    return finish(fig, list(grid.flat), keep_aspect=False)


def _layer_frames(records: dict[str, Any], table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per tensor (layer, module, subset-only diagnostics) and per (layer, series) merged-delta ratios, of the
    cells at each base's largest k that carry diagnostics."""
    if table.empty:
        return pd.DataFrame(), pd.DataFrame()
    top_k = table.groupby("base").k.max().to_dict()
    tensors, layers = [], []
    for r in table[table.k == table.base.map(top_k)].itertuples(index=False):
        d = records[r.cell_id].diagnostics
        t = d.tensors
        key = series_key(r.method, r.params)
        tensors.append(pd.DataFrame({"base": r.base, "series": key, "subset_id": r.subset_id, "layer": t.layer,
                                     "module": t.module, "cosine_mean": t.cosine_mean,
                                     "sign_conflict": t.sign_conflict, "subspace_overlap": t.subspace_overlap}))
        layers += [{"base": r.base, "series": key, "layer": i, "norm_ratio": s.norm_ratio, "rank_ratio": s.rank_ratio}
                   for i, s in d.layers.items()]
    frame = pd.concat(tensors, ignore_index=True) if tensors else pd.DataFrame()
    frame = frame[frame.layer.notna()] if not frame.empty else frame
    return frame, pd.DataFrame(layers)


LAYER_PANELS = [("cosine_mean", "task-vector cosine"), ("sign_conflict", "sign conflict (top 20%)"),
                ("subspace_overlap", f"subspace overlap (top {RANK})"), ("norm_ratio", "‖merged Δ‖ / Σ‖τ_i‖"),
                ("rank_ratio", "eff. rank: merged / tasks")]


def _layer_grid(tensors: pd.DataFrame, layers: pd.DataFrame, col: str, labels: dict[str, str]) -> pd.DataFrame:
    """Rows (modules, or series for the merged delta's ratios) × layers, means over the cells."""
    if col in ("norm_ratio", "rank_ratio"):
        grid = layers.pivot_table(index="series", columns="layer", values=col, aggfunc="mean")
        grid = grid.reindex(series_order(list(grid.index)))
        return grid.set_axis([_label(key, labels) for key in grid.index], axis=0)
    return tensors.pivot_table(index="module", columns="layer", values=col, aggfunc="mean").dropna(how="all")


def _norm(col: str, values: Any) -> Any:
    """Cosines diverge around 0 and ratios of effective ranks around 1 (when they straddle it); the rest are
    sequential."""
    if col == "cosine_mean":
        lim = float(np.nanmax(np.abs(values))) or 1.0
        return TwoSlopeNorm(0.0, -lim, lim), "RdBu_r"
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if col == "rank_ratio" and low < 1 < high:
        return TwoSlopeNorm(1.0, low, high), "RdBu_r"
    return None, "viridis"


def layer_figure(records: dict[str, Any], table: pd.DataFrame, labels: dict[str, str]) -> Any | None:
    """One column per base, one row per diagnostic, layers along x: module × layer for the three diagnostics
    of the task vectors (the subset decides them), series × layer for the merged delta's ratios. None when no
    cell carries per-layer diagnostics."""
    tensors, layers = _layer_frames(records, table)
    if tensors.empty or layers.empty:
        return None
    bases = sorted(set(tensors.base))
    grids = {(b, col): _layer_grid(tensors[tensors.base == b], layers[layers.base == b], col, labels)
             for b in bases for col, _ in LAYER_PANELS}
    heights = [max(len(grids[(b, col)]) for b in bases) + 1.5 for col, _ in LAYER_PANELS]
    n_layers = int(tensors.layer.max()) + 1
    fig, grid = plt.subplots(len(LAYER_PANELS), len(bases), squeeze=False, layout="constrained",
                             figsize=(len(bases) * (4.4 + 0.36 * max(n_layers, 16)), 0.2 * sum(heights) + 1.6),
                             gridspec_kw={"height_ratios": heights})
    for c, base in enumerate(bases):
        k = int(table[table.base == base].k.max())
        for r, (col, title) in enumerate(LAYER_PANELS):
            ax, frame = grid[r, c], grids[(base, col)]
            values = frame.to_numpy(dtype=float)
            norm, cmap = _norm(col, values)
            image = ax.imshow(values, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
                              extent=(-0.5, n_layers - 0.5, len(frame) - 0.5, -0.5))
            fig.colorbar(image, ax=ax, aspect=12, pad=0.01, fraction=0.04).ax.tick_params(labelsize=6.5)
            ax.set_yticks(range(len(frame)), list(frame.index), fontsize=6.5)
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True, nbins=min(n_layers, 16)))
            ax.tick_params(axis="x", labelsize=7, labelbottom=r == len(LAYER_PANELS) - 1)
            ax.set_title(f"{base}, k = {k}: {title}" if len(bases) > 1 else f"{title}, k = {k}", fontsize=8.5)
            ax.grid(False)
        grid[-1, c].set_xlabel("layer")
    return finish(fig, list(grid.flat), keep_aspect=False)


def _section(table: pd.DataFrame, rhos: pd.DataFrame, merges: int, figures: dict[str, list[Path]],
             labels: dict[str, str], first_figure: int) -> str:
    versions = sorted({int(v) for v in table.version})
    parts = ["## Interference diagnostics",
             f"Measured in each merge's own streaming pass (`study.diagnostics`; definitions in docs/study.md, "
             f"\"Interference diagnostics\"): {len(table.drop_duplicates('cell_id'))} of {merges} merge cells carry "
             f"them (`diagnostics.csv`; cells without: stored before diagnostics existed, or `diagnostics: false`)."
             + (" Some tensors were seen through a sample of their rows: those numbers are estimates."
                if table.sampled.any() else "")
             + (f" **The cells were measured with different diagnostics versions ({versions}):** cells cached from "
                f"an older version keep its numbers; a fresh store measures every cell with the current one."
                if len(versions) > 1 else "")]
    for number, (stem, caption) in enumerate(FIGURES, first_figure):
        if stem in figures:
            parts.append(f"![{stem}](figures/{stem}.png)\n\nFigure {number}. {caption} (PDF: `figures/{stem}.pdf`)")
    if not rhos.empty:
        shown = rhos.assign(series=[_label(series_key(m, p), labels) for m, p in zip(rhos.method, rhos.params)],
                            value=[f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}] (n={n})" if not np.isnan(r) else f"– (n={n})"
                                   for r, lo, hi, n in zip(rhos.rho, rhos.ci_low, rhos.ci_high, rhos.n)])
        grid = shown.pivot_table(index=["base", "series"], columns="diagnostic", values="value",
                                 aggfunc="first").reindex(columns=[c for c, _ in SHOWN]).reset_index()
        parts.append("Spearman's ρ of each diagnostic with the gain over the base, over the counted subsets of "
                     "all k, with its seeded 95% bootstrap interval (`diagnostics_spearman.csv`):\n\n" + md_table(grid))
    return "\n\n".join(parts)


def add_diagnostics(md: str, ctx: Any, records: dict[str, Any], per_subset: pd.DataFrame, labels: dict[str, str],
                    out: Path, first_figure: int = 1) -> tuple[str, list[Path]]:
    """Write ``diagnostics.csv``, ``diagnostics_spearman.csv`` and the two figures under ``out``; return
    ``md`` with the section inserted before the summary table (its figures numbered from ``first_figure``, after
    the report's own), and the paths written."""
    plan = ctx.plan
    table = diagnostics_table(plan, records, per_subset)
    rhos = spearman_table(table, ctx.sweep.seed)
    written = []
    for name, frame in (("diagnostics.csv", table), ("diagnostics_spearman.csv", rhos)):
        frame.to_csv(out / name, index=False)
        written.append(out / name)
    figures: dict[str, list[Path]] = {}
    if table.counted.any():
        apply_theme()
        figures["diagnostics_gain"] = save_figure(gain_figure(table, rhos, labels), out / "figures", "diagnostics_gain")
        layer = layer_figure(records, table, labels)
        if layer is not None:
            figures["diagnostics_layers"] = save_figure(layer, out / "figures", "diagnostics_layers")
    merges = len({c.cell_id for c in plan.cells if c.method not in (BASE, SINGLE, ENSEMBLE)})
    section = _section(table, rhos, merges, figures, labels, first_figure) if merges else ""
    anchor = "## Summary per (base, method, k)"
    if section:
        md = md.replace(anchor, f"{section}\n\n{anchor}", 1) if anchor in md else f"{md.rstrip()}\n\n{section}\n"
    return md, written + [p for paths in figures.values() for p in paths]
