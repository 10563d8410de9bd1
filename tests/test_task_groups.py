"""Benchmarks, not leaf tasks, are the unit of the average: an lm-eval group (or tag) counts once, scored as
lm-eval aggregates it, in the evaluation, in avg(cell), in the document bootstrap and in the report; sweeps
without groups keep their numbers exactly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from study.analysis.item_bootstrap import document_replicates
from study.analysis.measures import bootstrap_seed, cell_averages, subset_measures, summarize, task_gains
from study.analysis.tables import load_records, scores_table
from study.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PAPER_16 = ["arc_challenge", "arc_easy", "boolq", "commonsense_qa", "headqa", "hellaswag", "leaderboard_bbh",
            "leaderboard_gpqa", "leaderboard_mmlu_pro", "medmcqa", "mmlu", "openbookqa", "piqa", "prost",
            "truthfulqa_mc1", "winogrande"]
"""arXiv 2511.21437v1, Figs. 7-10 (docs/paper-checkpoints.md)."""


# ---------------------------------------------------------------- sweeps without groups keep their numbers


def test_mini_numbers_are_unchanged_with_or_without_a_benchmark_column():
    """paper/mini's committed summary and per-task gains, recomputed from its scores.parquet (written before
    benchmarks existed, so without the column, and again with every task its own benchmark): bit for bit."""
    scores = pd.read_parquet(REPO / "paper" / "mini" / "scores.parquet")
    summary = pd.read_csv(REPO / "paper" / "mini" / "summary.csv", dtype={"params": str})
    gains = pd.read_csv(REPO / "paper" / "mini" / "task_gains.csv", dtype={"params": str})
    key = ["cell_id", "base", "method", "params", "k", "subset_id", "checkpoints"]
    for frame in (scores, scores.assign(benchmark=scores.task)):
        assert cell_averages(frame).avg.tolist() == frame.groupby(key, sort=False).score.mean().tolist()
        per_subset = subset_measures(frame)
        mine = summarize(per_subset, 0)
        needs_store = ("gain_hier_ci_low", "gain_hier_ci_high", "p_beat_base_beyond_noise", "p_below_base_beyond_noise")
        shared = [c for c in summary.columns if c in mine.columns and c not in needs_store]
        assert len(shared) >= 12 and len(mine) == len(summary) == 54
        pd.testing.assert_frame_equal(mine[shared], summary[shared], check_exact=True, check_dtype=False)
        assert task_gains(frame, per_subset).gain.tolist() == gains.gain.tolist()


def _old_document_replicates(scores, per_subset, store, sweep_seed, n_boot):
    """The document bootstrap as it was before benchmarks (a mean over tasks), kept here as the reference."""
    from study.analysis.item_bootstrap import _cell_table, _doc_vectors

    out = {}
    for base, series in per_subset[per_subset.counted].groupby("base", sort=True):
        base_id, singles = _cell_table(scores, base)
        metrics = {t: m for t, m in scores[scores.cell_id == base_id[base]][["task", "metric"]].itertuples(index=False)}
        needed = {base_id[base], *singles.values(), *series.cell_id}
        vectors = {cid: _doc_vectors(store, cid, metrics) for cid in needed}
        reference = vectors[base_id[base]]
        order = sorted(needed)
        rng = np.random.default_rng(bootstrap_seed(sweep_seed, "items", base))
        avg = np.zeros((n_boot, len(order)))
        tasks = sorted(reference)
        for task in tasks:
            n = len(reference[task][0])
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n
            avg += weights @ np.stack([vectors[cid][task][1] for cid in order]).T
        avg /= len(tasks)
        out[base] = (order, avg)
    return out


def test_document_bootstrap_without_groups_draws_and_sums_as_before(fake_study):
    plan, store = fake_study.ctx.plan, fake_study.store
    scores = scores_table(plan, load_records(plan, store))
    assert (scores.benchmark == scores.task).all()  # fake records predate benchmarks: each task its own
    per_subset = subset_measures(scores)
    new = document_replicates(scores, per_subset, store, 7, n_boot=300)
    old = _old_document_replicates(scores, per_subset, store, 7, n_boot=300)
    assert set(new) == set(old) == {"tiny"}
    order, avg = old["tiny"]
    assert [new["tiny"].index[c] for c in order] == list(range(len(order)))
    assert np.array_equal(new["tiny"].avg, avg)


# ---------------------------------------------------------------- a hand-made study with one group


LEAF_DOCS = {"grp::a": 8, "grp::b": 2}
SOLO_DOCS = 4
CELL_VALUES = {"base": (0, 1, 0), "c0": (1, 1, 1), "c1": (0, 0, 1), "merge": (1, 0, 1)}
"""Per cell: every document of leaf a, of leaf b and of the single task solo scores this (0 or 1), so each
task's score is that value and the document bootstrap cannot move it."""


def _group_score(a: float, b: float, weight_by_size: bool) -> float:
    from lm_eval.api.metrics import aggregate_subtask_metrics

    return aggregate_subtask_metrics([a, b], list(LEAF_DOCS.values()), weight_by_size)


def _entries(values: tuple[int, int, int], weight_by_size: bool) -> dict[str, dict]:
    a, b, solo = map(float, values)
    mc = {"metric": "acc", "stderr": None, "output_type": "multiple_choice"}
    return {"grp::a": {**mc, "score": a, "metrics": {"acc": a}, "benchmark": "grp"},
            "grp::b": {**mc, "score": b, "metrics": {"acc": b}, "benchmark": "grp"},
            "solo": {**mc, "score": solo, "metrics": {"acc": solo}, "benchmark": "solo"},
            "grp": {**mc, "score": _group_score(a, b, weight_by_size), "output_type": "group", "benchmark": "grp",
                    "subtasks": list(LEAF_DOCS), "weight_by_size": weight_by_size}}


def _samples(values: tuple[int, int, int]) -> list[dict]:
    docs = {**LEAF_DOCS, "solo": SOLO_DOCS}
    return [{"task": task, "doc_id": d, "target": "0", "metrics": {"acc": float(v)}, "choice": 0}
            for (task, n), v in zip(docs.items(), values) for d in range(n)]


def group_study(root: Path, weight_by_size: bool) -> SimpleNamespace:
    """Base, two singles and one merge of both, scored on the group ``grp`` (leaves a: 8 documents, b: 2) and
    the single task ``solo``; everything multiple choice."""
    from study.checkpoints import ResolvedModel
    from study.config import ModelRef, parse_sweep
    from study.plan import build_plan
    from study.prepare import SweepContext
    from study.record import Outcome, Record, Timing
    from study.store import Store
    from study.zoo.tokenizer import build_tokenizer

    base_dir = root / "base"
    build_tokenizer().save_pretrained(base_dir)
    sweep = parse_sweep({"name": "groups", "seed": 3, "bases": [{"name": "tiny", "model": str(base_dir),
                                                                 "checkpoints": ["c0", "c1"]}],
                         "methods": [{"name": "task_arithmetic", "params": {"lambda": 0.5}}], "ks": [2],
                         "subsets": {"per_k": 1}, "evaluation": {"tasks": ["grp", "solo"], "limit": 8}})
    models = {lab: ResolvedModel(ModelRef(model=lab), base_dir if lab == str(base_dir) else root / lab, f"fake:{lab}")
              for lab in [str(base_dir), "c0", "c1"]}
    plan = build_plan(sweep, models, check_applicability=False)
    store = Store(root / "store")
    for cell in plan.unique_cells():
        who = {"base": "base", "single": cell.checkpoints[0] if cell.checkpoints else ""}.get(cell.method, "merge")
        values = CELL_VALUES[who]
        store.put(Record(cell_id=cell.cell_id, cell=cell, status=Outcome.DONE, scores=_entries(values, weight_by_size),
                         finished="2026-01-01T00:00:00+00:00", timing=Timing(total_s=1.0)), _samples(values))
    return SimpleNamespace(ctx=SweepContext(sweep, models, plan), store=store, plan=plan)


EXPECTED_AVG = {("base", True): (0.2 + 0) / 2, ("base", False): (0.5 + 0) / 2,
                ("merge", True): (0.8 + 1) / 2, ("merge", False): (0.5 + 1) / 2}
"""By hand: the group pools 8 documents of a and 2 of b (weight_by_size) or averages the two means."""


def expected_avg(who: str, weight_by_size: bool) -> float:
    return EXPECTED_AVG[who, weight_by_size]


@pytest.mark.parametrize("weight_by_size", [True, False])
def test_avg_counts_a_group_once_and_the_bootstrap_rebuilds_it_as_lm_eval(tmp_path, weight_by_size):
    study = group_study(tmp_path, weight_by_size)
    scores = scores_table(study.plan, load_records(study.plan, study.store))
    assert dict(zip(scores.task, scores.benchmark)) == {"grp::a": "grp", "grp::b": "grp", "grp": "grp", "solo": "solo"}
    cells = cell_averages(scores).set_index("method")
    want = {m: expected_avg(w, weight_by_size) for m, w in [("base", "base"), ("task_arithmetic", "merge")]}
    assert cells.avg["base"] == pytest.approx(want["base"]) and cells.avg["task_arithmetic"] == pytest.approx(
        want["task_arithmetic"])
    # the group once (0.8 pooled / 0.5 unweighted for the merge), not its leaves as if they were benchmarks
    assert cells.avg["task_arithmetic"] != scores[scores.method == "task_arithmetic"].score.mean()
    per_subset = subset_measures(scores)
    assert per_subset.gain.tolist() == pytest.approx([want["task_arithmetic"] - want["base"]])
    assert set(task_gains(scores, per_subset).task) == {"grp", "solo"}

    rep = document_replicates(scores, per_subset, study.store, 3, n_boot=64)["tiny"]
    for method, who in [("base", "base"), ("task_arithmetic", "merge")]:
        cid = scores[scores.method == method].cell_id.iloc[0]
        assert rep.of([cid])[:, 0] == pytest.approx(np.full(64, expected_avg(who, weight_by_size)), abs=1e-12)


def test_report_of_a_sweep_without_generation_tasks_says_lengths_have_nothing_to_show(tmp_path):
    from study.analysis.report import write_report

    study = group_study(tmp_path, True)
    out = tmp_path / "report"
    write_report(study.ctx, study.store, out)
    md = (out / "report.md").read_text()
    assert "Figure 5: no generated responses stored" in md
    assert "## Response lengths (generation tasks)\n\nNothing to show: no generated response is stored" in md
    assert pd.read_csv(out / "lengths.csv").empty
    summary = pd.read_csv(out / "summary.csv")
    assert summary.gain_mean.tolist() == pytest.approx([expected_avg("merge", True) - expected_avg("base", True)])
    assert set(pd.read_csv(out / "task_gains.csv").task) == {"grp", "solo"}


# ---------------------------------------------------------------- evaluation: lm-eval's own group score


def _small_copy(cfg: dict, name: str, n_docs: int, tmp: Path) -> dict:
    """A zoo task config over its first ``n_docs`` documents, under another name (a smaller member)."""
    src = Path(cfg["dataset_kwargs"]["data_files"]["test"])
    data = tmp / f"{name}.jsonl"
    data.write_text("".join(src.read_text().splitlines(keepends=True)[:n_docs]))
    return {**cfg, "task": name, "dataset_kwargs": {"data_files": {"test": str(data)}}}


def _group_yamls(zoo, tmp: Path) -> tuple[Path, Path]:
    cfg = {c["task"]: c for c in zoo.task_configs(["zoo:sub", "zoo:capital", "zoo:colour"])}
    pooled = {"group": "zoo_pooled", "task": [cfg["zoo_sub_mc"], _small_copy(cfg["zoo_capital_mc"], "cap3", 3, tmp)],
              "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}
    plain = {"group": "zoo_plain", "task": [cfg["zoo_colour_mc"], _small_copy(cfg["zoo_capital_mc"], "cap4", 4, tmp)],
             "aggregate_metric_list": [{"metric": "acc", "weight_by_size": False}]}
    paths = tmp / "zoo_pooled.yaml", tmp / "zoo_plain.yaml"
    for path, doc in zip(paths, (pooled, plain)):
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return paths


def test_group_scores_are_lm_evals_own_and_count_once(built_zoo, tmp_path):
    """Two zoo groups (weight_by_size true and false, members of 12 and 3-4 documents) and one single task,
    scored by the harness and by lm-eval's own ``simple_evaluate`` on the same model: the same group scores."""
    import lm_eval
    from lm_eval.api.metrics import aggregate_subtask_metrics
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from study.config import EvaluationSpec
    from study.evaluate import Evaluator, resolve_tasks
    from study.plan import Cell
    from study.record import Outcome, Record
    from study.zoo import load_zoo

    zoo = load_zoo()
    pooled, plain = _group_yamls(zoo, tmp_path)
    spec = EvaluationSpec(tasks=[str(pooled), str(plain), "zoo:count"], limit=12, bootstrap_iters=0)
    result = Evaluator(built_zoo.model("base"), spec, resolve_tasks(spec.tasks)).evaluate()
    s = result.scores
    assert {t: e["benchmark"] for t, e in s.items()} == {
        "zoo_pooled::zoo_sub_mc": "zoo_pooled", "zoo_pooled::cap3": "zoo_pooled", "zoo_pooled": "zoo_pooled",
        "zoo_plain::zoo_colour_mc": "zoo_plain", "zoo_plain::cap4": "zoo_plain", "zoo_plain": "zoo_plain",
        "zoo_count_mc": "zoo_count_mc"}
    assert (s["zoo_pooled"]["weight_by_size"], s["zoo_plain"]["weight_by_size"]) == (True, False)
    assert s["zoo_pooled"]["subtasks"] == ["zoo_pooled::zoo_sub_mc", "zoo_pooled::cap3"]
    assert "merge_study_benchmarks" not in result.lm_eval  # lm-eval's results stay lm-eval's

    with_groups = TaskManager(include_defaults=False, include_path=str(tmp_path))
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=str(built_zoo.model("base")), batch_size=spec.batch_size,
                                                device="cpu"),
                                     tasks=["zoo_pooled", "zoo_plain", zoo.task_configs(["zoo:count"])[0]],
                                     task_manager=with_groups, limit=12, bootstrap_iters=0)["results"]
    for task, entry in s.items():
        assert entry["score"] == pytest.approx(theirs[task]["acc,none"], abs=1e-12), task
    # the flag matters here: pooled and unweighted differ for these scores and sizes
    for group, (big, small), n_small in [("zoo_pooled", ("zoo_sub_mc", "cap3"), 3),
                                         ("zoo_plain", ("zoo_colour_mc", "cap4"), 4)]:
        leaves = [s[f"{group}::{big}"]["score"], s[f"{group}::{small}"]["score"]]
        other = aggregate_subtask_metrics(leaves, [12, n_small], not s[group]["weight_by_size"])
        assert other != pytest.approx(s[group]["score"]), group

    cell = Cell("c" * 24, "zoo", "base", {}, {}, 0, 0, ())
    frame = scores_table(SimpleNamespace(cells=[cell]), {cell.cell_id: Record.new(cell, Outcome.DONE, worker="t",
                                                                                  scores=s)})
    avg = cell_averages(frame).avg.iloc[0]
    assert avg == pytest.approx((s["zoo_pooled"]["score"] + s["zoo_plain"]["score"] + s["zoo_count_mc"]["score"]) / 3)


def test_a_group_without_an_aggregate_is_refused_before_any_model_loads(tmp_path):
    from study.evaluate import resolve_tasks

    path = tmp_path / "no_aggregate.yaml"
    path.write_text(yaml.safe_dump({"group": "bare", "task": [{"task": "x", "dataset_path": "json"}]}))
    with pytest.raises(UserError, match="group 'bare' has no aggregate_metric_list"):
        resolve_tasks([str(path)])


def test_a_tag_counts_once_as_the_group_of_its_tasks(built_zoo, tmp_path):
    """lm-eval expands a tag into tasks with no score together; named as one entry, it becomes a group with
    lm-eval's default aggregation, scored by lm-eval (here a tag over two zoo tasks of 12 and 3 documents)."""
    from lm_eval.api.metrics import aggregate_subtask_metrics
    from lm_eval.tasks import TaskManager

    from study.config import EvaluationSpec
    from study.evaluate import _tag_group, benchmarks, collect_results, run_lm_eval
    from study.zoo import load_zoo

    zoo = load_zoo()
    sub = zoo.task_configs(["zoo:sub"])[0]
    for cfg in (sub, _small_copy(zoo.task_configs(["zoo:capital"])[0], "cap3", 3, tmp_path)):
        (tmp_path / f"{cfg['task']}.yaml").write_text(yaml.safe_dump({**cfg, "tag": "zoo_pair"}))
    manager = TaskManager(include_defaults=False, include_path=str(tmp_path))
    task_dict = manager.load([_tag_group(manager, "zoo_pair")])
    assert {b.name: b.subtasks for b in benchmarks(task_dict).values()} == {"zoo_pair": ("cap3", "zoo_sub_mc")}
    spec = EvaluationSpec(tasks=["zoo_pair"], limit=12, bootstrap_iters=0)
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(built_zoo.model("base")), batch_size=16, device="cpu")
    scores = collect_results(run_lm_eval(lm, task_dict, spec), lm.tokenizer, spec, set()).scores
    assert scores["zoo_pair"]["weight_by_size"] is True and scores["cap3"]["benchmark"] == "zoo_pair"
    assert scores["zoo_pair"]["score"] == pytest.approx(aggregate_subtask_metrics(
        [scores["cap3"]["score"], scores["zoo_sub_mc"]["score"]], [3, 12], True), abs=1e-12)


# ---------------------------------------------------------------- the paper's sweeps


def test_paper_sweeps_name_the_published_16_benchmarks():
    from study.config import load_sweep

    for path in sorted((REPO / "sweeps" / "paper").glob("*.yaml")):
        sweep = load_sweep(path)
        assert sweep.evaluation.tasks == PAPER_16, path.name
        assert "Figs. 7-10" in path.read_text()


@pytest.mark.slow
def test_the_published_16_exist_in_the_installed_lm_eval_with_a_score_each():
    """Each name is an lm-eval task, tag or group, and each group has lm-eval's aggregate (``resolve_tasks``
    refuses one without); mmlu, leaderboard_bbh and leaderboard_gpqa are groups, headqa a tag. Offline: only
    lm-eval's task index is read (about 20 s), no dataset."""
    from study.evaluate import _kind, _task_index, resolve_tasks

    assert resolve_tasks(PAPER_16) == PAPER_16
    kinds = {name: _kind(_task_index()[name]) for name in PAPER_16}
    assert {n for n, k in kinds.items() if k == "GROUP"} == {"mmlu", "leaderboard_bbh", "leaderboard_gpqa"}
    assert {n for n, k in kinds.items() if k == "TAG"} == {"headqa"}
    assert set(kinds.values()) == {"TASK", "GROUP", "TAG"}
