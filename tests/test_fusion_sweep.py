"""Fusion in a sweep: cells and keys, validation, records with their cost, the report's series and cost table;
and on the real mini zoo, one fusion cell end to end, killed mid-training and resumed."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.checkpoints import ResolvedModel
from study.config import ModelRef, parse_sweep
from study.errors import UserError
from study.plan import FUSION, build_plan

CKPTS = ["c0", "c1", "c2"]


def sweep(fusion: list[dict], **extra):
    return parse_sweep({"name": "fusion-plan", "seed": 3,
                        "bases": [{"name": "tiny", "model": "/nowhere/base", "checkpoints": CKPTS}],
                        "methods": [{"name": "task_arithmetic", "params": {"lambda": 1.0}}], "fusion": fusion,
                        "ks": [1, 2, 3], "subsets": {"per_k": 2}, "evaluation": {"tasks": ["zoo:add"]}, **extra})


def plan(fusion: list[dict]):
    sw = sweep(fusion)
    models = {lab: ResolvedModel(ModelRef(model=lab), Path(lab), f"fake:{lab}") for lab in ["/nowhere/base", *CKPTS]}
    return build_plan(sw, models, check_applicability=False)


def fusion_cells(p):
    return [c for c in p.cells if c.kind == FUSION]


def test_fusion_cells_share_the_merges_subsets():
    p = plan([{"name": "min_ce", "params": {"steps": [10, 20]}}])
    cells = fusion_cells(p)
    merges = [c for c in p.cells if c.kind == "merge"]
    assert len(cells) == 2 * len(merges)  # two grid points
    assert {(c.k, c.subset_id, c.checkpoints) for c in cells} == {(c.k, c.subset_id, c.checkpoints) for c in merges}
    cell = cells[0]
    assert cell.method == "fusion:min_ce" and cell.method_label == "fusion min_ce" and cell.params == {"steps": 10}
    assert cell.resolved_params["target"] == "base" and cell.resolved_params["corpus"]["source"] == "zoo"
    assert cell.resolved_params["lambda"] == 0.5 and "fusion:min_ce(steps=10)" in cell.describe()


def keys(fusion: list[dict]) -> list[str]:
    return [c.cell_id for c in fusion_cells(plan(fusion))]


def test_keys_hold_what_decides_the_trained_weights(monkeypatch):
    default = keys([{"name": "min_ce"}])
    assert keys([{"name": "min_ce", "params": {"steps": 100, "lr": 0.0010, "lambda": 0.5}}]) == default
    assert keys([{"name": "min_ce", "label": "MinCE"}]) == default  # a label is not what a cell computes
    for changed in ({"params": {"lr": 0.002}}, {"params": {"top_k": 5}}, {"params": {"seed": 1}},
                    {"target": "c1"}, {"corpus": {"source": "zoo", "sequences": 64}}):
        other = keys([{"name": "min_ce", **changed}])
        assert not set(other) & set(default), changed
    assert not set(keys([{"name": "avg"}])) & set(default)
    from study.fusion import fuse

    bumped = dataclasses.replace(fuse.min_ce.__fusion_method__, version=2)
    monkeypatch.setattr(fuse.min_ce, "__fusion_method__", bumped)
    assert not set(keys([{"name": "min_ce"}])) & set(default)


def test_params_as_written_name_target_and_corpus_only_where_set():
    shown = fusion_cells(plan([{"name": "avg", "target": "c0", "corpus": {"sequences": 32}}]))[0].params
    assert shown["target"] == "c0" and shown["corpus"]["sequences"] == 32
    assert fusion_cells(plan([{"name": "avg"}]))[0].params == {}


@pytest.mark.parametrize("entry, message", [
    ({"name": "min_cee"}, "fusion\\[0\\]: unknown fusion method 'min_cee'; did you mean 'min_ce'"),
    ({"name": "min_ce", "params": {"step": 3}}, "fusion\\[0\\]: .*no parameter 'step'; did you mean 'steps'"),
    ({"name": "min_ce", "params": {"lambda": 2}}, "fusion\\[0\\]: .*lambda"),
    ({"name": "avg", "target": "zoo:nobody"}, "fusion\\[0\\]: target 'zoo:nobody' is neither 'base' nor a checkpoint"),
    ({"name": "avg", "corpus": {"source": "file", "path": "/no/such/file.txt"}}, "fusion\\[0\\]: corpus: /no/such"),
])
def test_bad_fusion_entries_are_user_errors(entry, message):
    from study.prepare import check_methods

    with pytest.raises(UserError, match=message):
        check_methods(sweep([entry]))


def test_unknown_fields_of_a_fusion_entry_name_their_path():
    with pytest.raises(UserError, match="fusion\\[0\\].targte: unknown field"):
        sweep([{"name": "avg", "targte": "base"}])


def test_a_record_keeps_its_cost_and_other_records_keep_their_bytes():
    from study.fusion.cost import FusionCost
    from study.record import Outcome, Record

    p = plan([{"name": "min_ce"}])
    cell = fusion_cells(p)[0]
    cost = FusionCost(teachers=2, corpus_sequences=8, corpus_digest="d", teacher_tokens=100, teachers_cached=1,
                      teacher_seconds=0.5, align_fuse_seconds=0.1, train_steps=3, train_tokens=60, train_seconds=1.0)
    rec = Record.new(cell, Outcome.DONE, worker="w", fusion=cost)
    back = Record.from_bytes(rec.to_bytes())
    assert back.fusion == cost and back == rec
    merge = next(c for c in p.cells if c.kind == "merge")
    plain = Record.new(merge, Outcome.DONE, worker="w")
    assert "fusion" not in plain.to_json() and Record.from_bytes(plain.to_bytes()).fusion is None


def test_cost_table_and_style_give_fusion_its_own_series():
    from study.analysis.cost import cost_table
    from study.analysis.style import FUSION as FUSION_FAMILY
    from study.analysis.style import family, series_key, series_styles
    from study.fusion.cost import FusionCost
    from study.record import Outcome, Record, Timing

    p = plan([{"name": "min_ce"}])
    records = {}
    for c in p.unique_cells():
        if c.kind == FUSION:
            cost = FusionCost(teachers=c.k, corpus_sequences=8, corpus_digest="d", teacher_tokens=100 * c.k,
                              teachers_cached=0, teacher_seconds=1.0, align_fuse_seconds=0.1, train_steps=3,
                              train_tokens=60, train_seconds=2.0)
            records[c.cell_id] = Record.new(c, Outcome.DONE, worker="w", fusion=cost,
                                            timing=Timing(merge_s=3.0, eval_s=1.0, total_s=4.0))
        elif c.kind == "merge":
            records[c.cell_id] = Record.new(c, Outcome.DONE, worker="w", timing=Timing(0.1, 1.0, 1.1))
    table = cost_table(p, records)
    fus = table[table.method == "fusion:min_ce"].set_index("k")
    assert fus.loc[2, "teacher_tokens_mean"] == 200 and fus.loc[3, "teacher_tokens_mean"] == 300
    assert fus.loc[2, "train_tokens_mean"] == 60 and fus.loc[2, "n_cells"] == 2 and fus.loc[2, "build_s_mean"] == 3.0
    ta = table[table.method == "task_arithmetic"]
    assert (ta.train_tokens_mean == 0).all() and list(ta.total_s_mean) == pytest.approx([1.1, 1.1])
    assert family("fusion:min_ce") == FUSION_FAMILY and family("ties") != FUSION_FAMILY
    keys_ = [series_key("fusion:min_ce", "{}"), series_key("fusion:avg", "{}"), series_key("ties", "{}")]
    styles = series_styles(keys_)
    assert len({(s.color, str(s.linestyle)) for s in styles.values()}) == 3
    assert styles[keys_[0]].linestyle == styles[keys_[1]].linestyle != styles[keys_[2]].linestyle


FUSION_SWEEP = """
name: fusion-zoo-e2e
seed: 0
bases:
  - name: zoo
    model: zoo:base
    checkpoints: [zoo:add, zoo:first, zoo:capital]
methods:
  - name: task_arithmetic
    params: {lambda: 1.0}
fusion:
  - name: min_ce
    params: {steps: 100, lr: 0.001, lambda: 0.5, top_k: 10}
ks: [1, 2]
subsets: {per_k: 1}
evaluation:
  tasks: [zoo:all]
  limit: 20
  batch_size: 32
  max_gen_toks: 48
"""


def _records(store: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (store / "records").glob("*/*.json")}


@pytest.mark.slow
def test_zoo_fusion_cell_killed_mid_training_resumes_and_is_reported(built_zoo, tmp_path, capsys):
    """One zoo fusion cell (teachers zoo:add, zoo:first; target the base): killed once its step-50 training
    checkpoint exists, run again, it resumes there with both teachers cached; the report shows it beside the
    merge with its cost. Whether it beats the base on the teachers' own skills is printed as measured."""
    from fixtures.sweeps import REPO, cli

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(FUSION_SWEEP)
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "study", "run", str(sweep_file), "--store", str(store)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not list((store / "fusion" / "train").glob("*.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _records(store)
    assert list((store / "fusion" / "train").glob("*.pt")), "no training checkpoint appeared before the deadline"
    assert not any(r["cell"]["method"].startswith("fusion:") for r in before.values())
    t0 = time.perf_counter()
    out = cli("run", str(sweep_file), "--store", str(store)).stdout
    after = _records(store)
    assert all(after[cid] == rec for cid, rec in before.items())
    fusion = next(r for r in after.values() if r["cell"]["method"] == "fusion:min_ce")
    assert fusion["status"] == "done" and "cells:" in out
    cost = fusion["fusion"]
    assert cost["resumed_from_step"] == 50 and cost["teachers_cached"] == 2 and cost["train_steps"] == 100
    assert not list((store / "fusion" / "train").glob("*.pt"))
    base = next(r for r in after.values() if r["cell"]["method"] == "base")
    skills = {"zoo:add": "zoo_add", "zoo:first": "zoo_first"}
    own = {c: (fusion["scores"][t]["score"], base["scores"][t]["score"]) for c, t in skills.items()}
    avg = {r["cell"]["method"]: sum(v["score"] for v in r["scores"].values()) / len(r["scores"])
           for r in (fusion, base)}
    with capsys.disabled():
        print(f"\nzoo fusion cell (min_ce, k=2, resumed at step 50): {fusion['timing']['total_s']:.1f} s "
              f"(train {cost['train_seconds']:.1f} s, {cost['train_tokens']} train tokens, "
              f"{cost['teacher_tokens']} teacher tokens); rerun {time.perf_counter() - t0:.1f} s; "
              f"own-task (fusion, base): {own}; avg (fusion, base): {avg['fusion:min_ce']:.3f}, {avg['base']:.3f}")
    report = tmp_path / "report"
    cli("report", str(sweep_file), "--store", str(store), "--out", str(report))
    md = (report / "report.md").read_text()
    assert "## Cost per cell" in md and "fusion min_ce" in md
    import pandas as pd

    summary = pd.read_csv(report / "summary.csv")
    assert set(summary.method) == {"task_arithmetic", "fusion:min_ce"}
    cost_csv = pd.read_csv(report / "cost.csv")
    assert cost_csv[cost_csv.method == "fusion:min_ce"].train_tokens_mean.iloc[0] == cost["train_tokens"]


def test_the_sweeps_corpus_spec_is_the_calibration_spec_field_for_field():
    """``CorpusSpec`` repeats ``CalibrationSpec``'s fields so the sweep schema imports no statistics code."""
    from study.config import CorpusSpec
    from study.fusion.corpus import calibration
    from study.statistics.spec import CalibrationSpec

    assert set(CorpusSpec.model_fields) == set(CalibrationSpec.model_fields)
    spec = CorpusSpec(source="lm_eval", task="arc_easy", split="train", sequences=8, max_tokens=32)
    assert calibration(spec) == CalibrationSpec(source="lm_eval", task="arc_easy", split="train", sequences=8,
                                                max_tokens=32)
