"""Selection on validation: disjoint zoo validation splits, the sweep's ``selection:``, cell keys, and the
report's pick (argmax on validation) beside the oracle (argmax on test), checked against the stored records."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fixtures.sweeps import cli
from study.checkpoints import ResolvedModel
from study.config import ModelRef, parse_sweep
from study.errors import UserError
from study.plan import build_plan
from study.zoo.skills import SKILLS, drawer, mixture, prompt
from study.zoo.spec import BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT, EXPERTS
from study.zoo.tasks import TASKS, documents
from study.zoo.validation import SUFFIX, unavailable, validation_config, validation_documents

WITH_VALIDATION = ["zoo_first", "zoo_last", "zoo_max"]
TEST_DOCS_SHA256 = "7ace10ba4a2f7249f4d91d901bc2b6be9bf9b7b1df9e25f8afda45a766e8d16e"
"""sha256 of every zoo task's test documents at the commit before validation splits existed (58da38a)."""


def sweep_data(selection: dict | None = None, lambdas: list[float] = (0.5, 1.0), per_k: int = 3,
               tasks: list[str] = ("zoo:first", "zoo:last", "zoo:max")) -> dict:
    data = {"name": "sel", "seed": 0,
            "bases": [{"name": "zoo", "model": "zoo:base", "checkpoints": ["zoo:first", "zoo:last", "zoo:max"]}],
            "methods": [{"name": "task_arithmetic", "params": {"lambda": list(lambdas)}},
                        {"name": "ties", "params": {"density": 0.2, "lambda": 1.0}}],
            "ks": [2], "subsets": {"per_k": per_k},
            "evaluation": {"tasks": list(tasks), "limit": 20, "batch_size": 32, "max_gen_toks": 16}}
    if selection is not None:
        data["selection"] = selection
    return data


def test_test_documents_are_unchanged():
    h = hashlib.sha256()
    for t in TASKS.values():
        h.update(json.dumps(documents(t), sort_keys=True).encode())
    assert h.hexdigest() == TEST_DOCS_SHA256


@pytest.mark.parametrize("task", WITH_VALIDATION)
def test_validation_is_disjoint_from_test_and_training(task):
    spec = TASKS[task]
    skill = SKILLS[spec.skill]
    val = validation_documents(task)
    questions = [d["question"] for d in val]
    assert len(val) >= 20 and len(set(questions)) == len(questions)
    assert not set(questions) & {d["question"] for d in documents(spec)}
    assert all(skill.is_eval(q) for q in questions)  # reserved: Skill.train_fact never returns them
    prompts = {prompt(q) for q in questions}
    draws = [mixture(BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT)]
    draws += [drawer(s, f) for s, f in EXPERTS.values() if s == spec.skill]
    for draw in draws:  # what the base and the skill's expert train on, drawn as training draws them
        r = random.Random(7)
        assert not prompts & {draw(r)[0] for _ in range(20000)}
    for doc in val:  # same generator, same format as the test documents
        assert set(doc) == set(documents(spec)[0])
        if "choices" in doc:
            assert doc["choices"][doc["label"]] == doc["answer"]


@pytest.mark.parametrize("task", [t for t in TASKS if t not in WITH_VALIDATION])
def test_tasks_without_a_disjoint_split_have_none(task):
    assert validation_documents(task) == () and unavailable(task)


def test_validation_config_scores_validation_docs(tmp_path):
    cfg = validation_config("zoo_first", tmp_path)
    assert cfg["task"] == "zoo_first" + SUFFIX and "test_split" not in cfg and cfg["validation_split"] == "validation"
    path = Path(cfg["dataset_kwargs"]["data_files"]["validation"])
    assert [json.loads(x) for x in path.read_text().splitlines()] == list(validation_documents("zoo_first"))


def fake_models(sweep) -> dict[str, ResolvedModel]:
    labels = {b.model.label for b in sweep.bases} | {c.label for b in sweep.bases for c in b.checkpoints}
    return {lab: ResolvedModel(ModelRef(model=lab), Path("/x") / lab, f"id:{lab}") for lab in labels}


def test_sweep_without_selection_keeps_its_cell_keys_and_dump():
    from study.prepare import task_identities

    sweep = parse_sweep(yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "smoke.yaml").read_text()))
    assert "selection" not in sweep.model_dump(mode="json")
    plan = build_plan(sweep, fake_models(sweep), check_applicability=False, tasks=task_identities(sweep, "ZOODIGEST"))
    ta = next(c for c in plan.cells if c.method == "task_arithmetic")
    # keys computed with the code before selection existed (58da38a), same fake identities
    assert (plan.cells[0].cell_id, plan.cells[1].cell_id, ta.cell_id) == (
        "ccbc195e5169ef2f1d6d3d9e", "7f95b5f1b6de20cce16687b2", "84fa6d550218ad65f2501001")
    selecting = build_plan(sweep, fake_models(sweep), check_applicability=False,
                           tasks=task_identities(sweep, "ZOODIGEST"), validation={"zoo_add__validation": "v"})
    assert not {c.cell_id for c in plan.cells} & {c.cell_id for c in selecting.cells}


@pytest.mark.parametrize("selection, message", [
    ({"split": "test"}, "selection.split"),
    ({"measure": "best"}, "selection.measure"),
    ({"tasks": {"zoo:add": "zoo:last"}}, "not in evaluation.tasks"),
    ({"extra": 1}, "selection.extra: unknown field"),
])
def test_bad_selection_config_is_one_line(selection, message):
    with pytest.raises(UserError) as exc:
        parse_sweep(sweep_data(selection))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_zoo_task_without_validation_is_refused(built_zoo):
    from study.validation import validation_tasks

    sweep = parse_sweep(sweep_data({}, tasks=["zoo:first", "zoo:add"]))
    with pytest.raises(UserError, match="zoo task zoo_add has no validation split"):
        validation_tasks(sweep, None, "d")
    mapped = parse_sweep(sweep_data({"tasks": {"zoo:add": "zoo:last"}}, tasks=["zoo:first", "zoo:add"]))
    assert [v.name for v in validation_tasks(mapped, None, "d")] == ["zoo_first" + SUFFIX, "zoo_last"]


def test_refusal_on_the_command_line_is_one_line_exit_2(built_zoo, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sweep_data({"split": "validation"}, tasks=["zoo:all"])))
    proc = cli("run", str(path), "--store", str(tmp_path / "store"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "has no validation split" in proc.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_lm_eval_tasks_use_their_validation_split():
    """arc_easy has validation and test splits: scored on validation as ``arc_easy__validation``; gsm8k has no
    validation split, hellaswag is already scored on it, mmlu is a group: each refused in one line."""
    from study.validation import validation_tasks

    (v,) = validation_tasks(parse_sweep(sweep_data({}, tasks=["arc_easy"])))
    assert (v.name, v.identity) == ("arc_easy" + SUFFIX, "arc_easy@validation")
    assert v.spec["test_split"] is None and v.spec["validation_split"] == "validation"
    for task, why in (("gsm8k", "no validation split"), ("hellaswag", "no test split"), ("mmlu", "is a group")):
        with pytest.raises(UserError, match=why):
            validation_tasks(parse_sweep(sweep_data({}, tasks=[task])))


def _means(records: list[dict], split: str) -> dict[tuple[str, str], float]:
    """Per (method, params as written): mean over subsets of the mean over that split's entries, computed from
    the stored records alone."""
    by: dict[tuple[str, str], list[float]] = {}
    for r in records:
        cell = r["cell"]
        if cell["method"] in ("base", "single"):
            continue
        entries = [e["score"] for e in r["scores"].values() if e.get("split", "test") == split]
        key = (cell["method"], json.dumps(cell["params"], sort_keys=True))
        by.setdefault(key, []).append(sum(entries) / len(entries))
    return {key: sum(v) / len(v) for key, v in by.items()}


@pytest.mark.slow
def test_selection_sweep_end_to_end(built_zoo, tmp_path):
    """A real mini-zoo sweep with ``selection:`` and three lambdas: selection.csv picks the argmax on validation
    and names the argmax on test as the oracle; a sweep without ``selection:`` writes no selection.csv."""
    from study.analysis.report import write_report
    from study.prepare import stored_context
    from study.store import Store

    path = tmp_path / "sel.yaml"
    path.write_text(yaml.safe_dump(sweep_data({"split": "validation", "measure": "avg"}, lambdas=[0.5, 1.0, 1.5])))
    cli("run", str(path), "--store", str(tmp_path / "store"))
    store = Store(tmp_path / "store", create=False)
    records = [json.loads(p.read_text()) for p in (tmp_path / "store" / "records").glob("*/*.json")]
    assert all({e.get("split", "test") for e in r["scores"].values()} == {"test", "validation"} for r in records)
    write_report(stored_context(store), store, tmp_path / "report", check_tokens=False)
    table = pd.read_csv(tmp_path / "report" / "selection.csv")
    val, test = _means(records, "validation"), _means(records, "test")
    for row in table.itertuples():
        points = [p for m, p in val if m == row.method]
        order = [json.dumps({"lambda": x}, sort_keys=True) for x in (0.5, 1.0, 1.5)] if len(points) > 1 else points
        picked = max(order, key=lambda p: (val[(row.method, p)], -order.index(p)))
        oracle = max(order, key=lambda p: (test[(row.method, p)], -order.index(p)))
        assert (row.selected_params, row.oracle_params) == (picked, oracle)
        assert row.selected_test_avg == pytest.approx(test[(row.method, picked)])
        assert row.gap == pytest.approx(test[(row.method, oracle)] - test[(row.method, picked)])
        assert row.grid_points == len(order)
    ties = table[table.method == "ties"].iloc[0]
    assert ties.selected_params == ties.oracle_params and ties.gap == 0
    assert "## Selection on validation" in (tmp_path / "report" / "report.md").read_text()
    scores = pd.read_parquet(tmp_path / "report" / "scores.parquet")
    assert not scores.task.str.endswith(SUFFIX).any()

    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(sweep_data(None, lambdas=[1.0], per_k=1)))
    cli("run", str(plain), "--store", str(tmp_path / "plain"))
    plain_store = Store(tmp_path / "plain", create=False)
    write_report(stored_context(plain_store), plain_store, tmp_path / "plain_report", check_tokens=False)
    assert not (tmp_path / "plain_report" / "selection.csv").exists()
    assert "Selection on validation" not in (tmp_path / "plain_report" / "report.md").read_text()
    plain_records = [json.loads(p.read_text()) for p in (tmp_path / "plain" / "records").glob("*/*.json")]
    assert all("split" not in e for r in plain_records for e in r["scores"].values())


def test_selection_table_picks_on_validation_and_names_the_test_oracle():
    """Synthetic records where validation prefers lambda 0.5 and test prefers 1.5: the pick is 0.5, the oracle
    1.5, the gap their test difference; ties' one grid point is both (gap 0)."""
    from study.analysis.measures import subset_measures, summarize
    from study.analysis.selection import selection_table
    from study.analysis.tables import scores_table
    from study.record import Outcome, Record

    sweep = parse_sweep(sweep_data({}, lambdas=[0.5, 1.0, 1.5]))
    plan = build_plan(sweep, fake_models(sweep), check_applicability=False,
                      validation={"zoo_first" + SUFFIX: "v"})
    val = {0.5: 0.6, 1.0: 0.5, 1.5: 0.4}
    test = {0.5: 0.3, 1.0: 0.35, 1.5: 0.5}
    records = {}
    for cell in plan.unique_cells():
        lam = cell.params.get("lambda") if cell.method == "task_arithmetic" else None
        t, v = (test[lam], val[lam]) if lam is not None else (0.2 + 0.01 * cell.subset_id, 0.2)
        scores = {"zoo_first": {"metric": "acc", "score": t},
                  "zoo_first" + SUFFIX: {"metric": "acc", "score": v, "split": "validation"}}
        records[cell.cell_id] = Record.new(cell, Outcome.DONE, worker="w", scores=scores)
    per_subset = subset_measures(scores_table(plan, records))
    table = selection_table(plan, records, per_subset, summarize(per_subset, 0)).set_index("method")
    ta, ties = table.loc["task_arithmetic"], table.loc["ties"]
    assert (ta.selected_params, ta.oracle_params) == ('{"lambda": 0.5}', '{"lambda": 1.5}')
    assert ta.gap == pytest.approx(0.2) and ta.selected_val_avg == pytest.approx(0.6)
    assert ta.selected_gain_mean == pytest.approx(0.3 - 0.2) and ta.grid_points == 3
    assert ties.selected_params == ties.oracle_params and ties.gap == 0
