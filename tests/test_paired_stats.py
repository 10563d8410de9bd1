"""Statistics of the report on synthetic records whose answers are known: Holm, paired differences, wins beyond
noise, the small-n warning, the normalised score and the base line of the relative figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from study.analysis.item_bootstrap import beyond_noise, document_replicates
from study.analysis.measures import SMALL_N, reference_gains, subset_measures, summarize
from study.analysis.paired import COLUMNS, bootstrap_p, holm, paired_table
from study.analysis.support import small_n_note, support_section

N_DOCS = 40


class DocStore:
    """Per-document samples of each cell: ``docs[cell_id] = {task: [0/1 per document]}``."""

    def __init__(self, docs: dict[str, dict[str, list[float]]]):
        self.docs = docs

    def samples(self, cell_id: str) -> list[dict]:
        return [{"task": task, "doc_id": d, "metrics": {"acc": v}}
                for task, values in self.docs[cell_id].items() for d, v in enumerate(values)]


def right_on(n_right: int, offset: int = 0) -> list[float]:
    """A document vector right on ``n_right`` documents starting at ``offset`` (cyclically)."""
    out = [0.0] * N_DOCS
    for i in range(n_right):
        out[(offset + i) % N_DOCS] = 1.0
    return out


def build(merges: dict[str, list[tuple[tuple[str, ...], list[float]]]], checkpoints: tuple[str, ...] = ("a", "b", "c"),
          base_docs: list[float] | None = None) -> tuple[pd.DataFrame, DocStore]:
    """Scores and samples of one base 'b', a single per checkpoint and, per method, one merge per (subset, docs);
    one task 't'. Every single answers as the base does."""
    base_docs = base_docs if base_docs is not None else right_on(16)
    docs = {"base": {"t": base_docs}, **{f"s_{c}": {"t": base_docs} for c in checkpoints}}
    cells = [("base", "base", 0, 0, [])] + [(f"s_{c}", "single", 1, i, [c]) for i, c in enumerate(checkpoints)]
    for method, subsets in merges.items():
        for sid, (ckpts, values) in enumerate(subsets):
            cid = f"{method}-{sid}"
            docs[cid] = {"t": values}
            cells.append((cid, method, len(ckpts), sid, list(ckpts)))
    rows = [{"cell_id": cid, "base": "b", "method": method, "params": "{}", "k": k, "subset_id": sid,
             "checkpoints": json.dumps(ckpts), "task": "t", "metric": "acc", "score": float(np.mean(docs[cid]["t"]))}
            for cid, method, k, sid, ckpts in cells]
    return pd.DataFrame(rows), DocStore(docs)


def analyse(scores: pd.DataFrame, store: DocStore, n_boot: int = 4000) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    per = subset_measures(scores)
    reps = document_replicates(scores, per, store, 0, n_boot)
    return beyond_noise(per, reps), paired_table(per, reps, 0), reps


def test_holm_matches_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.01, float("nan"), 0.04])  # an untested comparison is not counted in m
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert len(holm([])) == 0


def test_bootstrap_p_is_two_sided_and_never_zero():
    assert bootstrap_p(np.full(999, 0.3) + np.linspace(0, 0.1, 999), 0.35) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.linspace(-1, 1, 1001), 0.0) == pytest.approx(1.0)
    assert bootstrap_p(np.zeros(100), 0.0) == 1.0 and np.isnan(bootstrap_p(np.full(100, 0.2), 0.2))


def test_a_constant_paired_difference_is_found_although_the_series_intervals_overlap():
    """A is right on 8 more documents than B on every one of 6 subsets whose level varies a lot: the paired
    difference is exactly 0.2 and its interval excludes 0, while each series' own interval is wide."""
    subsets = [("a", "b"), ("a", "c"), ("b", "c"), ("a", "b"), ("a", "c"), ("b", "c")]
    levels = [10, 28, 14, 32, 20, 4]
    merges = {"A": [(s, right_on(n + 8, 3 * i)) for i, (s, n) in enumerate(zip(subsets, levels))],
              "B": [(s, right_on(n, 3 * i)) for i, (s, n) in enumerate(zip(subsets, levels))]}
    scores, store = build(merges)
    per, paired, _ = analyse(scores, store)
    assert list(paired.columns) == list(COLUMNS) and len(paired) == 1
    row = paired.iloc[0]
    assert (row.method_a, row.method_b, row.n_subsets) == ("A", "B", 6)
    assert row.mean_diff == pytest.approx(0.2) and row.interval == "subsets and documents"
    assert 0.05 < row.ci_low < 0.2 < row.ci_high < 0.35
    assert row.p_value < 0.01 and row.p_holm == row.p_value and row.holm_m == 1 and row.significant
    assert not row.small_n
    summary = summarize(per, 0).set_index("method")
    assert summary.loc["A", "gain_ci_low"] < summary.loc["B", "gain_ci_high"]  # unpaired intervals overlap


def test_identical_series_differ_by_exactly_zero_and_are_not_significant():
    subsets = [("a", "b"), ("a", "c"), ("b", "c")]
    same = [(s, right_on(12 + 4 * i, i)) for i, s in enumerate(subsets)]
    _, paired, _ = analyse(*build({"A": same, "B": same}))
    row = paired.iloc[0]
    assert row.mean_diff == 0.0 and row.ci_low == row.ci_high == 0.0 and row.p_value == 1.0
    assert not row.significant and row.small_n


def test_subsets_only_comparisons_on_few_subsets_are_not_tested():
    subsets = [("a", "b"), ("a", "c")]
    merges = {"A": [(s, right_on(30)) for s in subsets], "B": [(s, right_on(10)) for s in subsets]}
    scores, _ = build(merges)
    paired = paired_table(subset_measures(scores), {}, 0)
    row = paired.iloc[0]
    assert row.interval == "subsets" and row.mean_diff == pytest.approx(0.5)
    assert np.isnan(row.p_value) and not row.significant and row.holm_m == 0


def test_wins_beyond_noise():
    """One flipped document is a raw win, not a win beyond noise; all documents right is both; a copy of the
    base is neither; far fewer right is a loss beyond noise."""
    base = right_on(16)
    one_more = right_on(17)
    merges = {"flip": [(("a", "b"), one_more), (("a", "c"), one_more)],
              "all": [(("a", "b"), right_on(N_DOCS)), (("a", "c"), right_on(N_DOCS))],
              "copy": [(("a", "b"), base), (("a", "c"), base)],
              "worse": [(("a", "b"), right_on(2)), (("a", "c"), right_on(2))]}
    per, _, _ = analyse(*build(merges, base_docs=base))
    s = summarize(per, 0).set_index("method")
    assert s.loc["flip", "p_beat_base"] == 1.0 and s.loc["flip", "p_beat_base_beyond_noise"] == 0.0
    assert s.loc["all", "p_beat_base"] == 1.0 and s.loc["all", "p_beat_base_beyond_noise"] == 1.0
    assert s.loc["copy", "p_beat_base"] == 0.0 and s.loc["copy", "p_beat_base_beyond_noise"] == 0.0
    assert s.loc["copy", "p_below_base_beyond_noise"] == 0.0
    assert s.loc["worse", "p_below_base_beyond_noise"] == 1.0 and s.loc["worse", "p_beat_base_beyond_noise"] == 0.0
    without_samples = summarize(subset_measures(build(merges, base_docs=base)[0]), 0)
    assert without_samples.p_beat_base_beyond_noise.isna().all()  # no samples: not known, not 0


def test_small_n_warning_below_five_subsets_only():
    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    ckpts = ("a", "b", "c", "d")
    few_scores = build({"A": [(s, right_on(20)) for s in pairs[:2]], "B": [(s, right_on(24)) for s in pairs[:2]]},
                       ckpts)[0]
    few = summarize(subset_measures(few_scores), 0)
    enough = summarize(subset_measures(build({"A": [(s, right_on(20)) for s in pairs]}, ckpts)[0]), 0)
    assert SMALL_N == 5
    assert few.small_n.tolist() == [True, True] and enough.small_n.tolist() == [False]
    note = small_n_note(few)
    assert "Small n" in note and "k = 2 (2 subsets)" in note and "b at" in note
    assert small_n_note(enough) == ""
    paired = paired_table(subset_measures(few_scores), {}, 0)
    assert paired.small_n.tolist() == [True]
    text = support_section(few, reference_gains(few_scores, {"b": {2: pairs[:2]}}, 0), paired, pd.DataFrame(), {})
    assert "**Small n.**" in text and "0 of 1 pairs differ" in text


def test_normalised_score_divides_by_each_expert_on_its_own_task():
    """zoo:add is scored by zoo_add, zoo:first by zoo_first; a checkpoint outside the zoo names no task."""
    def cell(cid, method, k, sid, ckpts, scores):
        return [{"cell_id": cid, "base": "z", "method": method, "params": "{}", "k": k, "subset_id": sid,
                 "checkpoints": json.dumps(ckpts), "task": t, "metric": "acc", "score": v} for t, v in scores.items()]
    rows = (cell("base", "base", 0, 0, [], {"zoo_add": 0.2, "zoo_first": 0.3})
            + cell("s_add", "single", 1, 0, ["zoo:add"], {"zoo_add": 0.8, "zoo_first": 0.1})
            + cell("s_first", "single", 1, 1, ["zoo:first"], {"zoo_add": 0.1, "zoo_first": 0.6})
            + cell("s_hub", "single", 1, 2, ["org/model"], {"zoo_add": 0.5, "zoo_first": 0.5})
            + cell("m0", "ta", 2, 0, ["zoo:add", "zoo:first"], {"zoo_add": 0.4, "zoo_first": 0.45})
            + cell("m1", "ta", 2, 1, ["zoo:add", "org/model"], {"zoo_add": 0.6, "zoo_first": 0.2}))
    scores = pd.DataFrame(rows)
    per = subset_measures(scores).set_index("cell_id")
    assert per.loc["m0", "normalised"] == pytest.approx((0.4 / 0.8 + 0.45 / 0.6) / 2)
    assert per.loc["m1", "normalised"] == pytest.approx(0.6 / 0.8)  # org/model names no task: left out
    assert per.loc["m0", "base_normalised"] == pytest.approx((0.2 / 0.8 + 0.3 / 0.6) / 2)
    s = summarize(subset_measures(scores), 0).iloc[0]
    assert s.normalised_mean == pytest.approx(((0.4 / 0.8 + 0.45 / 0.6) / 2 + 0.6 / 0.8) / 2)
    ref = reference_gains(scores, {"z": {2: [("zoo:add", "zoo:first")]}}, 0).set_index("k")
    assert ref.loc[2, "base_normalised"] == pytest.approx((0.2 / 0.8 + 0.3 / 0.6) / 2)
    # the base line of Figure 3: (avg(base) - best) / best, best single avg = 0.45 (zoo:add)
    assert ref.loc[2, "base_rel_gain_best_single"] == pytest.approx((0.25 - 0.45) / 0.45)


def test_report_writes_paired_csv_the_support_section_and_new_summary_columns(fake_report):
    _, out, written = fake_report
    paired = pd.read_csv(out / "paired.csv", dtype={"params_a": str, "params_b": str})
    assert list(paired.columns) == list(COLUMNS) and not paired.empty
    assert set(paired.interval) == {"subsets and documents"}  # the fake store keeps samples
    assert (paired.groupby(["base", "k"]).holm_m.first() >= 1).all()
    summary = pd.read_csv(out / "summary.csv", dtype={"params": str})
    assert summary.small_n.all() and summary.p_beat_base_beyond_noise.notna().all()
    assert (summary.gain_hier_ci_low <= summary.gain_hier_ci_high).all()  # its samples are not its scores
    md = (out / "report.md").read_text()
    assert "## What the intervals support" in md and "**Small n" in md and "### paired.csv" in md
    assert out / "figures" / "paired_matrix.png" in written


def test_the_written_difference_interval_has_the_sign_of_its_sentence():
    """"a above b by 0.39" must come with the interval of a − b ([+0.34, +0.45]), not of b − a."""
    from study.analysis.support import _paired_lines

    row = {"base": "zoo", "k": 8, "method_a": "ties", "params_a": "{}", "method_b": "model_stock",
           "params_b": "{}", "mean_diff": -0.39, "ci_low": -0.45, "ci_high": -0.34, "p_holm": 0.01,
           "significant": True, "n_subsets": 8, "small_n": False}
    lines = _paired_lines(pd.DataFrame([row]), {})
    said = next(line for line in lines if "above" in line)
    assert said.startswith("- zoo, k = 8: model_stock above ties by 0.3900")
    assert "[+0.3400, +0.4500]" in said
