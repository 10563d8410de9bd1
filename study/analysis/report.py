"""``merge-study report``: every table, figure and ``report.md`` regenerated from the store alone.

Files written under ``out_dir`` (their columns are documented in ``tables``, ``measures``, ``lengths`` and in
report.md's "Table contracts"):

- ``scores.parquet``: tidy scores, one row per (plan cell, task) of done cells;
- ``summary.csv``: gain, P(merged > base) and relative gain over the best single per (base, method, params, k);
- ``reference.csv``: mean single and mean best-single gains (the curves' reference lines);
- ``task_gains.csv``: per-task gains over the base; ``coverage.csv``: planned, counted and dropped subsets;
- ``lengths.csv``: response-length statistics of generation tasks;
- ``findings.csv``: the (series, k, measure) whose 95% interval excludes 0 (``study.analysis.findings``);
- ``paired.csv``: every pair of series on their shared subsets, with Holm-corrected p-values
  (``study.analysis.paired``);
- ``selection.csv``: a selection sweep's grid point picked on validation per (base, method, k), with the oracle
  picked on test (``study.analysis.selection``; only when the sweep has ``selection:``);
- ``figures/*.png|pdf|svg``: the seven figures (``FIGURES``); ``report.md`` and ``report.html``;
- ``provenance.json``: the commit, sweep hash and zoo digest the report was made with.

A store with no merge cells yet (only the base and singles) still gets a report: coverage, the base and the
singles, and figures marked "no data yet".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from study.analysis import curves, sections
from study.analysis.cost import cost_section, cost_table, with_cost_section
from study.analysis.findings import N_BOOT_FINDINGS, findings_section, stated_findings, statement_level
from study.analysis.item_bootstrap import beyond_noise, document_replicates, item_intervals
from study.analysis.lengths import check_token_counts, length_table, per_cell_lengths
from study.analysis.measures import reference_gains, subset_measures, summarize, task_gains
from study.analysis.paired import paired_table
from study.analysis.provenance import PROVENANCE_FILE, git_commit, previous_zoo, provenance
from study.analysis.render import md_table, to_html
from study.analysis.style import apply_theme, save_figure, series_key
from study.analysis.support import small_n_note, support_section
from study.analysis.tables import load_records, outcomes_table, scores_table
from study.plan import BASE, SINGLE

FIGURES = [("gain_curves", "Figure 1. Gain over the base against k (mean and 95% bootstrap interval over subsets). "
            "Dashed red at 0: the base returned unchanged; dashed grey: mean best single checkpoint of the same "
            "subsets; diamond at k = 1: mean single checkpoint; dashed black (if present): output ensemble."),
           ("p_beat_base", "Figure 2. Share of subsets whose merge beats the base (strictly), against k."),
           ("rel_gain_best_single", "Figure 3. Relative gain over the best single checkpoint of each subset. Above 0 "
            "the merge beats its best single; dashed red: where returning the base unchanged lies on this scale for "
            "the same subsets. Only above that line does the merge also beat not merging."),
           ("task_heatmap", "Figure 4. Gain over the base per task at each base's largest k."),
           ("length_curves", "Figure 5. Mean tokens per response (mean over generation tasks) against k."),
           ("normalised_curves", "Figure 6. Normalised score: the merge's score on each merged expert's own task "
            "divided by that expert's, averaged over the subset's experts (mean and 95% interval over subsets). "
            "Dashed dark grey at 1: the experts themselves; dashed red: the base returned unchanged."),
           ("paired_matrix", "Figure 7. Paired differences between series on the subsets both merged: mean "
            "avg(row) - avg(column), red where the row scores higher; * marks a difference whose Holm-adjusted "
            "p-value (within the panel) is below 0.05 (`paired.csv`). n: shared subsets.")]


def series_labels(plan: Any) -> dict[str, str]:
    """Series key → the method's label in the sweep (``label:`` or its name)."""
    return {series_key(c.method, c.params_key): c.method_label or c.method for c in plan.cells}


def _write_tables(out: Path, tables: dict[str, pd.DataFrame]) -> list[Path]:
    paths = []
    for name, frame in tables.items():
        path = out / name
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def _figures(out: Path, summary: pd.DataFrame, reference: pd.DataFrame, gains: pd.DataFrame,
             lengths: pd.DataFrame, labels: dict[str, str], paired: pd.DataFrame) -> dict[str, list[Path]]:
    apply_theme()
    makers = {"gain_curves": lambda: curves.gain_curves(summary, reference, labels),
              "p_beat_base": lambda: curves.p_beat_curves(summary, labels),
              "rel_gain_best_single": lambda: curves.rel_gain_curves(summary, labels, reference),
              "task_heatmap": lambda: curves.task_heatmap(gains, labels),
              "length_curves": lambda: curves.length_curves(lengths, labels),
              "normalised_curves": lambda: curves.normalised_curves(summary, reference, labels),
              "paired_matrix": lambda: curves.paired_matrix(paired, labels)}
    empty = {"gain_curves": summary.empty and reference.empty, "p_beat_base": summary.empty,
             "rel_gain_best_single": summary.empty, "task_heatmap": gains.empty, "length_curves": lengths.empty,
             "normalised_curves": summary.normalised_mean.isna().all(), "paired_matrix": paired.empty}
    return {stem: save_figure(make(), out / "figures", stem) for stem, make in makers.items() if not empty[stem]}


def _token_check(ctx: Any, records: dict[str, Any], store: Any) -> str:
    try:
        paths = {b.name: ctx.base_model(b.name).path for b in ctx.sweep.bases}
        checked, problems = check_token_counts(ctx.plan, records, store, paths)
    except Exception as exc:  # a report must not fail because a tokenizer moved; it says so instead
        return f"Token counts were not re-checked: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    head = "; ".join(problems[:5])
    return (f"Token counts re-checked against a re-tokenisation of the stored responses with each base's "
            f"tokenizer: {checked} responses, {len(problems)} mismatch(es){': ' + head if problems else ''}.")


def write_report(ctx: Any, store: Any, out_dir: str | Path, *, check_tokens: bool = True) -> list[Path]:
    """Write every table, figure, report.md and report.html of ``ctx``'s sweep from ``store``; the paths."""
    out = Path(out_dir)
    commit, zoo_before = git_commit(), previous_zoo(out)
    out.mkdir(parents=True, exist_ok=True)
    plan, sweep = ctx.plan, ctx.sweep
    records = load_records(plan, store)
    scores = scores_table(plan, records)
    per_subset = subset_measures(scores)
    replicates = document_replicates(scores, per_subset, store, sweep.seed, N_BOOT_FINDINGS)
    per_subset = beyond_noise(per_subset, replicates)
    summary = summarize(per_subset, sweep.seed, item_intervals(scores, per_subset, store, sweep.seed,
                                                               replicates=replicates))
    paired = paired_table(per_subset, replicates, sweep.seed)
    reference = reference_gains(scores, plan.subsets, sweep.seed)
    gains = task_gains(scores, per_subset)
    outcomes = outcomes_table(plan, records)
    coverage_md, coverage = sections.coverage(outcomes, per_subset)
    lengths, longest = length_table(per_cell_lengths(plan, records, store, sweep.evaluation.max_gen_toks))
    labels = series_labels(plan)
    level = statement_level(summary)
    findings = stated_findings(summary, item_intervals(scores, per_subset, store, sweep.seed, level=level,
                                                       replicates=replicates), level)
    written = _write_tables(out, {"scores.parquet": scores, "summary.csv": summary, "reference.csv": reference,
                                  "task_gains.csv": gains, "coverage.csv": coverage, "lengths.csv": lengths,
                                  "findings.csv": findings, "paired.csv": paired})
    cost = cost_table(plan, records)  # cost.csv and its section: the compute each series spent per cell
    written += _write_tables(out, {"cost.csv": cost})
    selection_md = ""
    if sweep.selection is not None:  # selection.csv and its section: only a selection sweep has validation scores
        from study.analysis.selection import selection_section, selection_table

        chosen = selection_table(plan, records, per_subset, summary)
        written += _write_tables(out, {"selection.csv": chosen})
        validation = [t for t in plan.tasks if t not in sweep.evaluation.tasks]
        selection_md = selection_section(chosen, labels, validation)
    figures = _figures(out, summary, reference, gains, lengths, labels, paired)
    written += [p for paths in figures.values() for p in paths]
    token_note = _token_check(ctx, records, store) if check_tokens and not lengths.empty else ""
    prov = provenance(ctx, store, outcomes, records, commit=commit, zoo_before=zoo_before)
    md = _markdown(ctx, outcomes, summary, reference, gains, lengths, longest, labels, figures,
                   coverage_md, token_note, prov, findings_section(findings, labels),
                   support_section(summary, reference, paired, findings, labels), selection_md)
    from study.analysis.diagnostics_figures import add_diagnostics  # diagnostics.csv, its figures and section

    md, diagnostics_paths = add_diagnostics(md, ctx, records, per_subset, labels, out, first_figure=len(FIGURES) + 1)
    written += diagnostics_paths
    md = with_cost_section(md, cost_section(cost, labels))
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md, f"{sweep.name}: merging study", out))
    (out / PROVENANCE_FILE).write_text(json.dumps({"commit": commit, "sweep_hash": plan.sweep_hash, "zoo": ctx.zoo},
                                                  indent=1) + "\n")
    return written + [out / "report.md", out / "report.html", out / PROVENANCE_FILE]


def _no_merges(plan: Any) -> list[str]:
    """A note when the plan has no merge cells (a sweep with ``ks: [1]``): the report then shows coverage, the
    base and the single checkpoints only."""
    if any(c.method not in (BASE, SINGLE) for c in plan.cells):
        return []
    return ["**This store holds no merge cells** (only the base and single checkpoints): there are no merge "
            "curves or summaries; the coverage above and the reference lines below show the base and the singles."]


def _markdown(ctx: Any, outcomes: pd.DataFrame, summary: pd.DataFrame,
              reference: pd.DataFrame, gains: pd.DataFrame, lengths: pd.DataFrame, longest: dict[str, str | None],
              labels: dict[str, str], figures: dict[str, list[Path]], coverage_md: str, token_note: str,
              prov_rows: list[tuple[str, str]], findings_md: str, support_md: str = "", selection_md: str = "") -> str:
    parts = [f"# {ctx.sweep.name}: merging study report",
             "Generated by `merge-study report` from the result store; every number below is computed from it "
             "(tables at full precision next to this file).",
             sections.design(ctx), coverage_md, *_no_merges(ctx.plan), *([support_md] if support_md else []),
             "## Figures", *([small_n_note(summary, short=True)] if small_n_note(summary) else [])]
    for stem, caption in FIGURES:
        if stem in figures:
            parts.append(f"![{stem}](figures/{stem}.png)\n\n{caption} (PDF: `figures/{stem}.pdf`, SVG: "
                         f"`figures/{stem}.svg`)")
        else:
            parts.append(f"{caption.split('.')[0]}: " + ("no generated responses stored (see Response lengths)."
                                                          if stem == "length_curves" else "no data yet."))
    shown = summary.drop(columns=[c for c in summary.columns if c.endswith(("_ci_low", "_ci_high"))
                                  and c.startswith(("p_beat", "normalised"))])
    parts.append(f"## Summary per (base, method, k)\n\nMeans over counted subsets; intervals are seeded 95% "
                 f"bootstrap intervals over subsets, and `gain_hier_ci_*` over subsets and documents "
                 f"(`summary.csv`). {small_n_note(summary, short=True)}\n\n"
                 f"{md_table(sections.labelled(shown, labels))}")
    parts += [selection_md] if selection_md else []
    parts.append(findings_md)
    parts.append(f"## Reference lines\n\n{md_table(reference)}")
    top = curves.largest_k_gains(gains)
    if not top.empty:
        grid = sections.labelled(top, labels).pivot_table(index=["base", "series", "k"], columns="task",
                                                          values="gain", aggfunc="first").reset_index()
        parts.append(f"## Per-task gain over the base at the largest k\n\n{md_table(grid)}")
    named = ", ".join(f"{b}: `{c}`" for b, c in longest.items() if c) or "none"
    parts.append(f"## Response lengths (generation tasks)\n\nTokens under the base's tokenizer; relative lengths "
                 f"are the mean over tasks of per-task ratios minus one. Longest-answering single checkpoint: "
                 f"{named}. {token_note}\n\n{md_table(sections.lengths_view(lengths, labels), digits=3)}"
                 if not lengths.empty else
                 "## Response lengths (generation tasks)\n\nNothing to show: no generated response is stored, because "
                 "no task of this sweep generates text (all multiple choice, as the paper's 16 benchmarks are) or "
                 "none of its generation tasks has been scored yet.")
    parts.append(sections.failures(outcomes))
    prov = pd.DataFrame(prov_rows, columns=["item", "value"])
    parts.append(f"## Provenance\n\n{md_table(prov)}")
    parts.append(sections.contracts())
    return "\n\n".join(parts) + "\n"
