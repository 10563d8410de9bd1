"""Intervals over subsets and documents: paired, wider than subsets alone, absent when documents differ."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from study.analysis.findings import stated_findings
from study.analysis.item_bootstrap import item_intervals
from study.analysis.measures import subset_measures, summarize


class FakeStore:
    """Per-document samples of each cell: ``docs[cell_id] = {task: [values...]}``."""

    def __init__(self, docs: dict[str, dict[str, list[float]]], ids: dict[str, list[int]] | None = None):
        self.docs, self.ids = docs, ids or {}

    def samples(self, cell_id: str) -> list[dict]:
        out = []
        for task, values in self.docs[cell_id].items():
            ids = self.ids.get(cell_id, list(range(len(values))))
            out += [{"task": task, "doc_id": d, "metrics": {"acc": v}} for d, v in zip(ids, values)]
        return out


def _scores(docs: dict[str, dict[str, list[float]]], cells: list[tuple[str, str, int, list[str]]]) -> pd.DataFrame:
    rows = []
    for cid, method, k, ckpts in cells:
        for task, values in docs[cid].items():
            rows.append({"cell_id": cid, "base": "b", "method": method, "params": "{}", "k": k,
                         "subset_id": 0 if method != "m" else int(cid[-1]), "checkpoints": json.dumps(ckpts),
                         "task": task, "metric": "acc", "score": float(np.mean(values))})
    return pd.DataFrame(rows)


def _study(merge_docs: list[list[float]], n: int = 40) -> tuple[pd.DataFrame, pd.DataFrame, FakeStore]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, n).astype(float).tolist()
    docs = {"base": {"t": base}, "s_a": {"t": base}, "s_b": {"t": base}, "s_c": {"t": base}}
    cells = [("base", "base", 0, []), ("s_a", "single", 1, ["a"]), ("s_b", "single", 1, ["b"]),
             ("s_c", "single", 1, ["c"])]
    for i, values in enumerate(merge_docs):
        docs[f"m{i}"] = {"t": values}
        cells.append((f"m{i}", "m", 2, [["a", "b"], ["b", "c"], ["a", "c"]][i]))
    scores = _scores(docs, cells)
    return scores, subset_measures(scores), FakeStore(docs)


def test_two_equal_small_gains_are_a_point_over_subsets_but_not_over_documents() -> None:
    base = _study([])[2].docs["base"]["t"]
    one_more = list(base)
    one_more[base.index(0.0)] = 1.0  # one document of 40 flips: +0.025, twice
    scores, per_subset, store = _study([one_more, one_more])
    summary = summarize(per_subset, 0)
    assert summary.gain_ci_low.iloc[0] == summary.gain_ci_high.iloc[0] > 0  # subsets alone: an exact "finding"
    items = item_intervals(scores, per_subset, store, 0)
    gain = items[items.measure == "gain"].iloc[0]
    assert gain.ci_low <= 0 < gain.ci_high  # the documents cannot resolve one flipped answer
    assert stated_findings(summary, items).query("measure == 'gain'").empty
    assert not stated_findings(summary).query("measure == 'gain'").empty


def test_a_merge_right_on_every_document_the_base_missed_is_a_finding() -> None:
    scores, per_subset, store = _study([[1.0] * 40, [1.0] * 40])
    items = item_intervals(scores, per_subset, store, 0)
    gain = items[items.measure == "gain"].iloc[0]
    assert 0.2 < gain.ci_low < gain.ci_high
    found = stated_findings(summarize(per_subset, 0), items)
    assert set(found.interval) == {"subsets and documents"} and set(found.direction) == {"above"}


def test_identical_answers_give_a_zero_interval_and_results_are_seeded() -> None:
    base = _study([])[2].docs["base"]["t"]
    scores, per_subset, store = _study([list(base), list(base)])
    first = item_intervals(scores, per_subset, store, 0)
    assert (first[first.measure == "gain"][["ci_low", "ci_high"]].to_numpy() == 0).all()
    pd.testing.assert_frame_equal(first, item_intervals(scores, per_subset, store, 0))


def test_cells_that_answered_other_documents_fall_back_to_subsets_at_the_same_level() -> None:
    scores, per_subset, store = _study([[1.0] * 40, [1.0] * 40])
    store.ids["m1"] = list(range(1, 41))
    items = item_intervals(scores, per_subset, store, 0, level=0.999)
    assert set(items.interval) == {"subsets"}
    found = stated_findings(summarize(per_subset, 0), items, 0.999)
    assert set(found.interval) == {"subsets"} and set(found.level) == {0.999}


def test_simultaneous_level_follows_the_number_of_candidate_statements() -> None:
    from study.analysis.findings import candidates, statement_level

    summary = summarize(_study([[1.0] * 40, [1.0] * 40])[1], 0)
    assert candidates(summary) == 2 and statement_level(summary) == 1 - 0.05 / 2
    wide = item_intervals(*_study([[1.0] * 40, [1.0] * 40]), 0, level=0.999)
    narrow = item_intervals(*_study([[1.0] * 40, [1.0] * 40]), 0, level=0.95)
    assert (wide.ci_low <= narrow.ci_low).all() and (wide.ci_high >= narrow.ci_high).all()
