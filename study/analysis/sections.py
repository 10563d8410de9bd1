"""The sections of ``report.md``, each built from the sweep, the plan and the tables: nothing typed by hand.

A section is a function returning markdown; ``study.analysis.report`` strings them together. Numbers shown
here are rounded for reading; the CSV and parquet files next to the report carry them at full precision.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from study.analysis.findings import FINDINGS_COLUMNS

from study.analysis.lengths import AVG_TASK, LENGTH_COLUMNS
from study.analysis.measures import SUMMARY_COLUMNS
from study.analysis.paired import COLUMNS as PAIRED_COLUMNS
from study.analysis.render import md_table
from study.analysis.style import series_key, series_label
from study.analysis.tables import SCORE_COLUMNS
from study.plan import BASE, SINGLE
from study.record import Outcome


def design(ctx: Any) -> str:
    """Bases, checkpoints, methods and their grids, ks, subsets, tasks and every evaluation setting."""
    sweep, plan = ctx.sweep, ctx.plan
    ev = sweep.evaluation
    bases = pd.DataFrame([{"base": b.name, "model": b.model.label, "checkpoints": len(b.checkpoints),
                           "checkpoint ids": ", ".join(c.label for c in b.checkpoints)} for b in sweep.bases])
    methods = pd.DataFrame([{"method": m.name, "label": m.label or m.name,
                             "hyper-parameters (grid as written)": json.dumps(m.params, sort_keys=True),
                             "grid points": len(m.grid())} for m in sweep.methods])
    drawn = pd.DataFrame([{"base": b, **{f"k={k}": len(s) for k, s in sorted(by_k.items())}}
                          for b, by_k in plan.subsets.items()])
    settings = pd.DataFrame([
        ("tasks", ", ".join(ev.tasks)), ("docs per task (limit)", ev.limit if ev.limit else "all"),
        ("few-shot", ev.num_fewshot if ev.num_fewshot is not None else "task default"),
        ("max_gen_toks", ev.max_gen_toks), ("chat template", ev.apply_chat_template), ("dtype", ev.dtype),
        ("backend", ev.backend), ("batch size", ev.batch_size), ("output ensemble", ev.ensemble),
        ("ks", ", ".join(str(k) for k in sweep.ks)), ("subsets drawn per k (at most)", sweep.subsets.per_k),
        ("sweep seed (subsets, bootstrap)", sweep.seed), ("evaluation seed", ev.seed),
    ], columns=["setting", "value"]).astype(str)
    desc = f"{sweep.description}\n\n" if sweep.description else ""
    return (f"## Design\n\n{desc}### Bases and checkpoints\n\n{md_table(bases)}\n\n### Methods\n\n{md_table(methods)}"
            f"\n\n### Evaluation and sampling\n\n{md_table(settings)}\n\n### Subsets drawn per (base, k)\n\n"
            f"{md_table(drawn)}")


def coverage(outcomes: pd.DataFrame, per_subset: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Status counts, and per (base, method, params, k) how many planned subsets were counted or dropped."""
    unique = outcomes.drop_duplicates("cell_id")
    counts = unique.groupby(["base", "status"]).size().unstack(fill_value=0).reset_index()
    merges = outcomes[~outcomes.method.isin([BASE, SINGLE])]
    table = merges.groupby(["base", "method", "params", "k"]).agg(
        planned=("cell_id", "size"), done=("status", lambda s: int((s == Outcome.DONE).sum())),
        failed=("status", lambda s: int((s == Outcome.FAILED).sum())),
        not_applicable=("status", lambda s: int((s == Outcome.NOT_APPLICABLE).sum())),
        missing=("status", lambda s: int((s == Outcome.PENDING).sum()))).reset_index()
    counted = per_subset[per_subset.counted].groupby(["base", "method", "params", "k"]).size().rename("counted")
    table = table.merge(counted.reset_index(), how="left", on=["base", "method", "params", "k"]).fillna({"counted": 0})
    table["counted"] = table.counted.astype(int)
    table = table.astype({c: "int64" for c in ("planned", "done", "failed", "not_applicable", "missing")})  # typed when empty
    table["dropped"] = table.done - table.counted
    reasons = per_subset[~per_subset.counted].dropped_because.value_counts()
    why = "; ".join(f"{r}: {n}" for r, n in reasons.items()) or "none"
    text = (f"## Coverage\n\nCells per status (unique cells):\n\n{md_table(counts)}\n\n"
            f"Merge subsets done but dropped from the measures (their base or a single is not done, or a task is "
            f"missing): **{int(table.dropped.sum())}** of {int(table.done.sum())} done ({why}). Not applicable: "
            f"**{int(table.not_applicable.sum())}**; failed: **{int(table.failed.sum())}**; not yet run: "
            f"**{int(table.missing.sum())}**.")
    incomplete = table[(table.counted < table.planned)]
    if not incomplete.empty:
        text += f"\n\nGroups with fewer counted subsets than planned:\n\n{md_table(incomplete)}"
    return text, table


def failures(outcomes: pd.DataFrame) -> str:
    """Every failed cell with its one-line error; not-applicable cells counted by reason."""
    unique = outcomes.drop_duplicates("cell_id")
    failed = unique[unique.status == "failed"]
    rows = pd.DataFrame({"cell": [_describe(r) for r in failed.itertuples()], "cell_id": failed.cell_id,
                         "error": failed.error})
    na = unique[unique.status == "not_applicable"].groupby(["method", "k", "error"]).size().rename("cells")
    na = na.reset_index().rename(columns={"error": "reason"})
    return (f"## Failures\n\n{len(failed)} failed cell(s).\n\n{md_table(rows)}\n\n### Not applicable\n\n"
            f"{md_table(na)}")


def _describe(row: Any) -> str:
    if row.method == BASE:
        return f"{row.base}: base"
    if row.method == SINGLE:
        return f"{row.base}: single {json.loads(row.checkpoints)[0]}"
    return f"{row.base}: {row.method} {row.params} k={row.k} #{row.subset_id}"


def labelled(frame: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """``frame`` with its method and params columns replaced by one readable ``series`` column."""
    series = [series_label(labels.get(series_key(m, p), m), p) for m, p in zip(frame.method, frame.params)]
    out = frame.drop(columns=["method", "params"])
    out.insert(1, "series", series)
    return out


def lengths_view(lengths: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Per (base, series, k): mean tokens per generation task, then truncation and relative lengths (Avg.)."""
    if lengths.empty:
        return lengths
    tokens = lengths.pivot_table(index=["base", "method", "params", "k"], columns="task", values="mean_tokens",
                                 aggfunc="first")
    tasks = [t for t in tokens.columns if t != AVG_TASK] + [AVG_TASK]
    tokens = tokens[tasks].rename(columns=lambda t: f"tokens: {t}")
    avg = lengths[lengths.task == AVG_TASK].set_index(["base", "method", "params", "k"])
    view = tokens.join(avg[["truncation_rate", "rel_length_vs_base", "rel_length_vs_longest_single"]]).reset_index()
    return labelled(view.sort_values(["base", "k", "method", "params"]), labels)


def contracts() -> str:
    """The columns of every table the report writes (the same text as the modules' docstrings)."""
    parts = ["## Table contracts"]
    for name, cols in (("scores.parquet", SCORE_COLUMNS), ("summary.csv", SUMMARY_COLUMNS),
                       ("lengths.csv", LENGTH_COLUMNS)):
        parts.append(f"### {name}\n\n" + md_table(pd.DataFrame(list(cols.items()), columns=["column", "meaning"])))
    parts.append("### reference.csv\n\n" + md_table(pd.DataFrame([
        ("base, k", "base and subset size"), ("reference", "single (k = 1, mean over checkpoints) or best_single"),
        ("n", "checkpoints (k = 1) or subsets averaged"), ("gain_mean", "mean gain over the base"),
        ("gain_ci_low, gain_ci_high", "seeded 95% bootstrap interval"),
        ("base_rel_gain_best_single", "mean (avg(base) - best) / best over the same subsets: the base line of Figure 3"),
        ("base_normalised", "the base's normalised score over the same subsets: the base line of Figure 6")],
        columns=["column", "meaning"])))
    parts.append("### task_gains.csv\n\nbase, method, params, k, task, gain: mean over counted subsets of "
                 "score(merge, task) - score(base, task).")
    parts.append("### coverage.csv\n\nper (base, method, params, k): planned, done, failed, not_applicable, "
                 "missing, counted and dropped subsets.")
    parts.append("### findings.csv\n\n" + md_table(pd.DataFrame(list(FINDINGS_COLUMNS.items()),
                                                                 columns=["column", "meaning"])))
    parts.append("### paired.csv\n\n" + md_table(pd.DataFrame(list(PAIRED_COLUMNS.items()),
                                                               columns=["column", "meaning"])))
    return "\n\n".join(parts)
