"""The planner: stable content keys, shared base/single cells, paired subsets, grid points."""

from __future__ import annotations

from pathlib import Path

import yaml

from study.checkpoints import ResolvedModel
from study.config import ModelRef, parse_sweep
from study.plan import build_plan, draw_subsets
from test_config import contract


def fake_models(sweep, tag: str = "") -> dict[str, ResolvedModel]:
    labels = {b.model.label for b in sweep.bases} | {c.label for b in sweep.bases for c in b.checkpoints}
    return {lab: ResolvedModel(ModelRef(model=lab), Path("/nonexistent") / lab, f"id:{lab}{tag}") for lab in labels}


def plan_of(data: dict, tag: str = ""):
    sweep = parse_sweep(data)
    return build_plan(sweep, fake_models(sweep, tag), check_applicability=False)


def test_base_and_every_single_are_planned_once():
    plan = plan_of(contract())
    methods = [c.method for c in plan.cells]
    assert methods.count("base") == 1 and methods.count("single") == 4
    assert {c.checkpoints[0] for c in plan.cells if c.method == "single"} == {"zoo:add", "zoo:copy", "zoo:sort", "zoo:capital"}


def test_subsets_are_shared_by_methods_and_seeded():
    plan = plan_of(contract())
    by_method: dict[str, set] = {}
    for c in plan.cells:
        if c.k >= 2:
            by_method.setdefault(c.method, set()).add((c.k, c.subset_id, c.checkpoints))
    assert by_method["task_arithmetic"] == by_method["ties"]
    assert plan_of(contract()).subsets == plan.subsets
    other = contract()
    other["seed"] = 7
    assert plan_of(other).subsets != plan.subsets


def test_cell_keys_are_stable_and_follow_inputs():
    a = {c.cell_id for c in plan_of(contract()).cells}
    assert a == {c.cell_id for c in plan_of(contract()).cells}
    changed = {c.cell_id for c in plan_of(contract(), tag="-retrained").cells}
    assert not (a & changed)
    data = contract()
    data["evaluation"]["limit"] = 41
    assert not (a & {c.cell_id for c in plan_of(data).cells})


def test_grid_and_one_over_k():
    plan = plan_of(contract())
    ta = [c for c in plan.cells if c.method == "task_arithmetic"]
    assert {(c.k, c.params["lambda"], c.resolved_params["lambda"]) for c in ta} >= {(3, "1/k", 1 / 3), (3, 0.5, 0.5)}
    k2 = [c for c in ta if c.k == 2 and c.subset_id == 0]
    assert len(k2) == 2 and k2[0].cell_id == k2[1].cell_id  # 0.5 == 1/2: one record, both curves
    assert len(plan.unique_cells()) == len(plan.cells) - 2


def test_exhaustive_when_few_subsets():
    labels = ["a", "b", "c", "d"]
    assert draw_subsets(labels, 3, 10, 0, "x") == [("a", "b", "c"), ("a", "b", "d"), ("a", "c", "d"), ("b", "c", "d")]
    drawn = draw_subsets(labels * 1 + ["e", "f", "g"], 3, 5, 0, "x")
    assert len(set(drawn)) == 5 and all(list(s) == sorted(s, key=(labels + ["e", "f", "g"]).index) for s in drawn)
