"""``write_report`` on the hand-made study: files, contracts, and numbers recomputed from scores.parquet alone."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import study.analysis.lengths as lengths_mod
import study.analysis.measures as measures_mod
import study.analysis.tables as tables_mod
from study.analysis.lengths import LENGTH_COLUMNS
from study.analysis.measures import SUMMARY_COLUMNS
from study.analysis.tables import SCORE_COLUMNS


def test_every_file_exists_and_is_not_empty(fake_report):
    _, out, written = fake_report
    names = {p.relative_to(out).as_posix() for p in written}
    for name in ["scores.parquet", "summary.csv", "lengths.csv", "reference.csv", "report.md", "report.html",
                 *[f"figures/{f}.{ext}" for f in ("gain_curves", "p_beat_base", "rel_gain_best_single",
                                                  "task_heatmap", "length_curves") for ext in ("png", "pdf")]]:
        assert name in names
        assert (out / name).stat().st_size > 0, name


def test_report_md_has_every_section_and_only_existing_figures(fake_report):
    _, out, _ = fake_report
    md = (out / "report.md").read_text()
    for heading in ["## Design", "## Coverage", "## Figures", "## Summary", "## Response lengths", "## Failures",
                    "## Provenance", "## Table contracts"]:
        assert heading in md
    for ref in [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]:
        assert (out / ref).is_file()
    assert "RuntimeError: boom" in md and "fake: ties is not run at k = 3" in md
    assert "sweep hash" in md and "60 responses, 0 mismatch" in md
    html = (out / "report.html").read_text()
    assert '<table class="sortable">' in html and '<img alt="gain_curves" src="figures/gain_curves.png">' in html


def test_scores_parquet_contract(fake_report):
    study, out, _ = fake_report
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert set(scores[scores.method == "base"].k) == {0} and set(scores[scores.method == "single"].k) == {1}
    assert set(scores[scores.method.isin(["base", "single"])].params) == {"{}"}
    shared = scores[(scores.method == "task_arithmetic") & (scores.k == 2)]
    assert set(shared.params) == {'{"lambda": "1/k"}', '{"lambda": 0.5}'}
    assert shared.groupby("params").cell_id.apply(frozenset).nunique() == 1  # same records under both grid points
    assert len(scores) == 2 * len({(r.cell_id, r.params) for r in scores.itertuples()})


def test_summary_recomputed_from_scores_parquet_alone(fake_report):
    """The acceptance check: means over tasks per cell, then over subsets, from the parquet file only."""
    _, out, _ = fake_report
    scores = pd.read_parquet(out / "scores.parquet")
    summary = pd.read_csv(out / "summary.csv", dtype={"params": str})
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    cells = scores.groupby(["cell_id", "base", "method", "params", "k", "subset_id", "checkpoints"]).score.mean()
    cells = cells.reset_index()
    base = cells[cells.method == "base"].set_index("base").score
    single = {(r.base, json.loads(r.checkpoints)[0]): r.score for r in cells[cells.method == "single"].itertuples()}
    merges = cells[~cells.method.isin(["base", "single"])].copy()
    merges["best"] = [max(single[(b, c)] for c in json.loads(cs)) for b, cs in zip(merges.base, merges.checkpoints)]
    merges["gain"] = merges.score - merges.base.map(base)
    merges["win"] = merges.score > merges.base.map(base)
    merges["rel"] = (merges.score - merges.best) / merges.best
    want = merges.groupby(["base", "method", "params", "k"]).agg(
        n=("gain", "size"), gain=("gain", "mean"), p=("win", "mean"), rel=("rel", "mean")).reset_index()
    got = summary.merge(want, on=["base", "method", "params", "k"], how="outer", indicator=True)
    assert (got._merge == "both").all()
    assert (got.n_subsets == got.n).all()
    for mine, theirs in [("gain_mean", "gain"), ("p_beat_base", "p"), ("rel_gain_best_single_mean", "rel")]:
        assert got[mine].tolist() == got[theirs].tolist()


def test_summary_has_the_designed_numbers(fake_report):
    _, out, _ = fake_report
    s = pd.read_csv(out / "summary.csv", dtype={"params": str}).set_index(["method", "params", "k"])
    ta_half = s.loc[("task_arithmetic", '{"lambda": 0.5}', 2)]
    assert ta_half.n_subsets == 3 and ta_half.p_beat_base == pytest.approx(2 / 3)
    assert ta_half.rel_gain_best_single_mean == pytest.approx(-1 / 18)
    assert s.loc[("task_arithmetic", '{"lambda": "1/k"}', 3)].rel_gain_best_single_mean == pytest.approx(1 / 3)
    assert s.loc[("ties", '{"density": 0.2}', 2)].n_subsets == 2
    assert ("ties", '{"density": 0.2}', 3) not in s.index
    assert s.loc[("ensemble", "{}", 2)].n_subsets == 3


def test_lengths_token_counts_match_a_retokenisation(fake_report):
    """Acceptance: lengths.csv equals statistics of a fresh count of the stored responses with the base tokenizer."""
    from transformers import AutoTokenizer

    from fixtures.analysis import MAX_GEN_TOKS

    study, out, _ = fake_report
    tok = AutoTokenizer.from_pretrained(study.base_dir)
    table = pd.read_csv(out / "lengths.csv", dtype={"params": str})
    assert list(table.columns) == list(LENGTH_COLUMNS)
    per_group: dict[tuple, list[tuple[float, float]]] = {}
    for cell in study.ctx.plan.cells:
        rec = study.store.get(cell.cell_id)
        if rec is None or rec.status != "done":
            continue
        gen = [s for s in study.store.samples(cell.cell_id) if s["task"] == "gen_task"]
        counts = lengths_mod.recount_tokens([s["response"] for s in gen], tok)
        assert [s["truncated"] for s in gen] == [n >= MAX_GEN_TOKS for n in counts]
        key = (cell.method, cell.params_key, cell.k)
        per_group.setdefault(key, []).append((sum(counts) / len(counts), sum(n >= MAX_GEN_TOKS for n in counts) / len(counts)))
    rows = table[table.task == "gen_task"].set_index(["method", "params", "k"])
    assert len(rows) == len(per_group)
    for key, stats in per_group.items():
        assert rows.loc[key].mean_tokens == pytest.approx(sum(m for m, _ in stats) / len(stats))
        assert rows.loc[key].truncation_rate == pytest.approx(sum(t for _, t in stats) / len(stats))
    base = rows.loc[("base", "{}", 0)]
    assert base.mean_tokens == 7.0 and base.truncation_rate == 0.25 and base.rel_length_vs_base == 0.0


def test_check_token_counts_finds_an_edited_count(fake_study, tmp_path):
    from study.analysis.tables import load_records

    plan, store = fake_study.ctx.plan, fake_study.store
    records = load_records(plan, store)
    checked, problems = lengths_mod.check_token_counts(plan, records, store, {"tiny": fake_study.base_dir})
    assert checked == 60 and problems == []
    cell = next(c for c in plan.cells if c.method == "base")
    samples = store.samples(cell.cell_id)
    samples[-1] = {**samples[-1], "n_tokens": samples[-1]["n_tokens"] + 1}
    from study.store import Store

    copy = Store(tmp_path / "store")
    copy.put(records[cell.cell_id], samples)
    _, problems = lengths_mod.check_token_counts(plan, {cell.cell_id: copy.get(cell.cell_id)}, copy,
                                                 {"tiny": fake_study.base_dir})
    assert len(problems) == 1 and "stored 9, recounted 8" in problems[0]


@pytest.mark.parametrize("module,columns", [(tables_mod, SCORE_COLUMNS), (measures_mod, SUMMARY_COLUMNS),
                                            (lengths_mod, LENGTH_COLUMNS)])
def test_module_docstrings_document_every_column(module, columns):
    for column in columns:
        assert f"``{column}``" in module.__doc__ or column in module.__doc__, column
