"""A sweep's per-tensor parameter values (``{gradient: [...]}``, ``{filters: [...]}``) merge what mergekit merges.

Each case is one method on the mini zoo with a gradient or filter form, written three ways: as a sweep cell
(merged by the runner, through the streaming driver), as the equivalent mergekit YAML run by ``merge --config``
(native, from mergekit's planner) and by mergekit's ``run_merge``. The first two are the same native code
and must agree bit for bit; mergekit to float32 tolerance. The forms are also checked against the constant
values they reduce to on the layers where mergekit's interpolation gives exactly that value, so a form that
were ignored would fail even if all three agreed. Also: cell keys (canonical forms), bad forms (one line,
exit 2), a prepass that would read a per-tensor value, ``zoo:NAME`` inside a mergekit YAML, and the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fixtures.sweeps import cli

SUBSET = ["zoo:add", "zoo:sub"]
SLERP_T = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
           {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]
DENSITY_FILTERS = [{"filter": "self_attn", "value": 0.3}, {"filter": "mlp", "value": [0.9, 0.4]}, {"value": 0.5}]

CASES = {
    # name: (method, sweep params, mergekit method, mergekit global parameters, per-model parameters, base model)
    "ties_gradient_density": ("ties", {"density": {"gradient": [0.9, 0.4]}},
                              "ties", {"density": [0.9, 0.4], "normalize": True}, {"weight": 1.0}, "zoo:base"),
    "ties_filtered_density": ("ties", {"density": {"filters": DENSITY_FILTERS}, "lambda": 0.8},
                              "ties", {"density": DENSITY_FILTERS, "normalize": True, "lambda": 0.8},
                              {"weight": 1.0}, "zoo:base"),
    "task_arithmetic_weight_gradient": ("task_arithmetic", {"weight": {"gradient": [1.0, 0.3, 0.6]}, "lambda": 0.7},
                                        "task_arithmetic", {"lambda": 0.7}, {"weight": [1.0, 0.3, 0.6]}, "zoo:base"),
    "slerp_filtered_t": ("slerp", {"t": {"filters": SLERP_T}}, "slerp", {"t": SLERP_T}, {}, SUBSET[0]),
}


def sweep_dict(method: str, params: dict, ks: list[int] | None = None) -> dict:
    return {"name": "per-tensor", "bases": [{"name": "zoo", "model": "zoo:base", "checkpoints": [*SUBSET, "zoo:first"]}],
            "methods": [{"name": method, "params": params}], "ks": ks or [2], "subsets": {"per_k": 3},
            "evaluation": {"tasks": ["zoo:add"], "limit": 2}}


def sweep_cells(sweep: dict):
    from study.config import parse_sweep
    from study.prepare import prepare

    ctx = prepare(parse_sweep(sweep))
    return ctx, [c for c in ctx.plan.cells if c.method not in ("base", "single")]


def merged_cell(ctx, cell) -> dict[str, torch.Tensor]:
    from study.runner import CellRunner

    return CellRunner(ctx, None).weights(cell)


def mergekit_yaml(case: str) -> dict:
    _, _, method, shared, per_model, base = CASES[case]
    models = [{"model": m, **({"parameters": per_model} if per_model else {})} for m in SUBSET]
    return {"merge_method": method, "base_model": base, "dtype": "float32", "parameters": shared, "models": models}


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def with_zoo_paths(value, zoo):
    if isinstance(value, dict):
        return {k: with_zoo_paths(v, zoo) for k, v in value.items()}
    if isinstance(value, list):
        return [with_zoo_paths(v, zoo) for v in value]
    return str(zoo.model(value)) if isinstance(value, str) and value.startswith("zoo:") else value


@pytest.mark.parametrize("case", list(CASES))
def test_sweep_form_equals_merge_config_and_mergekit(built_zoo, mergekit_api, tmp_path, case):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    from study.mergekit_config import merge_config, plan_config

    method, params = CASES[case][:2]
    ctx, cells = sweep_cells(sweep_dict(method, params))
    cell = next(c for c in cells if list(c.checkpoints) == SUBSET)
    ours = merged_cell(ctx, cell)

    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(mergekit_yaml(case), sort_keys=False))
    plan = plan_config(config)
    assert plan.runner == "native", plan.reason
    via_config = tensors(merge_config(plan, tmp_path / "config-out"))
    assert set(ours) == set(via_config)
    for name in ours:
        assert torch.equal(ours[name], via_config[name]), name

    run_merge(MergeConfiguration.model_validate(with_zoo_paths(mergekit_yaml(case), built_zoo)),
              str(tmp_path / "mergekit-out"), MergeOptions(device="cpu", quiet=True, random_seed=0))
    theirs = tensors(tmp_path / "mergekit-out")
    assert set(ours) == set(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def constant_merge(ctx, cell, **params) -> dict[str, torch.Tensor]:
    """The cell's merge with plain (constant) values in place of its per-tensor ones."""
    from study.merge import merge_state_dict, open_inputs
    from study.methods.registry import get_method

    info = get_method(cell.method)
    resolved = info.resolve_params({**cell.resolved_params, **params}, n_models=cell.k)
    inputs = open_inputs(ctx.base_model(cell.base).path, [ctx.models[c].path for c in cell.checkpoints])
    return merge_state_dict(inputs, info, resolved)


def test_forms_take_their_values_where_mergekit_gives_them(built_zoo):
    """Over the zoo's 4 layers a gradient [0.9, 0.4] is 0.9 at layer 0 and the embeddings (t = 0) and 0.4 at
    layer 3 (t = 1); a filter applies its value to the tensors whose name contains it, the catch-all elsewhere."""
    ctx, cells = sweep_cells(sweep_dict("ties", {"density": [{"gradient": [0.9, 0.4]}, {"filters": DENSITY_FILTERS}]}))
    gradient, filtered = (next(c for c in cells if list(c.checkpoints) == SUBSET and c.params == p)
                          for p in ({"density": {"gradient": [0.9, 0.4]}}, {"density": {"filters": DENSITY_FILTERS}}))
    at = {d: constant_merge(ctx, gradient, density=d) for d in (0.9, 0.4, 0.3, 0.5)}
    merged = merged_cell(ctx, gradient)
    for name in merged:
        if name.startswith(("model.layers.0.", "model.embed_tokens", "lm_head", "model.norm")):
            assert torch.equal(merged[name], at[0.9][name]), name
        elif name.startswith("model.layers.3."):
            assert torch.equal(merged[name], at[0.4][name]), name
    assert not torch.equal(merged["model.layers.1.mlp.up_proj.weight"], at[0.9]["model.layers.1.mlp.up_proj.weight"])
    merged = merged_cell(ctx, filtered)
    for name in merged:
        if "self_attn" in name:
            assert torch.equal(merged[name], at[0.3][name]), name
        elif "mlp" in name and name.startswith("model.layers.3."):
            assert torch.equal(merged[name], at[0.4][name]), name
        elif "mlp" not in name:
            assert torch.equal(merged[name], at[0.5][name]), name


def test_cell_keys_are_canonical_forms(built_zoo):
    from study.plan import Plan

    def keys(params: dict, k: int = 2) -> list[str]:
        _, cells = sweep_cells(sweep_dict("ties", params, ks=[k]))
        return [c.cell_id for c in cells]

    gradient = keys({"density": {"gradient": [0.9, 0.4]}})
    assert keys({"density": {"gradient": [0.90, "0.8/k"]}}) == gradient  # coerced, c/k resolved inside the form
    assert keys({"density": {"gradient": [0.9, 0.5]}}) != gradient
    assert keys({"density": {"gradient": [0.9, "0.8/k"]}}, k=3) != keys({"density": {"gradient": [0.9, 0.4]}}, k=3)
    plain = keys({"density": 0.5})
    assert keys({"density": {"filters": [{"value": 0.5}]}}) == plain  # one value for every tensor is that value
    assert keys({"density": {"filters": [{"filter": "*", "value": [0.5]}, {"value": 0.9}]}}) == plain
    assert keys({"density": {"filters": [{"filter": "mlp", "value": 0.5}]}}) != plain
    assert keys({"density": {"filters": [*DENSITY_FILTERS, {"value": 0.7}]}}) == keys({"density": {"filters": DENSITY_FILTERS}})

    ctx, cells = sweep_cells(sweep_dict("ties", {"density": [0.5, {"gradient": [0.9, 0.4]}]}))
    assert len({json.dumps(c.params, sort_keys=True) for c in cells}) == 2  # a grid of a scalar and a form
    form = next(c for c in cells if c.params["density"] != 0.5)
    assert form.resolved_params["density"] == {"gradient": [0.9, 0.4]}
    assert json.loads(form.params_key) == {"density": {"gradient": [0.9, 0.4]}}
    again = Plan.from_json(json.loads(json.dumps(ctx.plan.to_json())))  # a stored plan reads back to the same cells
    assert [c.cell_id for c in again.cells] == [c.cell_id for c in ctx.plan.cells]


@pytest.mark.parametrize("density, words", [
    ({"gradiant": [0.9, 0.4]}, ["methods[0].params", "density", "gradient"]),
    ({"gradient": [0.9, 1.5]}, ["methods[0]", "density", "1.5", "out of range"]),
    ({"filters": [{"filter": "mlp", "value": 0.5}, {"filtr": "x", "value": 1}]}, ["density", "filters[1].filtr"]),
    ({"filters": [{"filter": "mlp", "value": [0.5, 0]}]}, ["density", "0.0", "out of range"]),
])
def test_bad_form_is_a_user_error(built_zoo, density, words):
    from study.errors import UserError

    with pytest.raises(UserError) as err:
        sweep_cells(sweep_dict("ties", {"density": density}))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_gradient_of_a_word_is_refused_and_filters_take_words(built_zoo):
    from study.errors import UserError

    with pytest.raises(UserError, match="'trim_scope': a gradient interpolates .* needs a float parameter"):
        sweep_cells(sweep_dict("ties", {"trim_scope": {"gradient": ["tensor", "global"]}}))
    _, cells = sweep_cells(sweep_dict("ties", {"normalize": {"filters": [{"filter": "mlp", "value": False},
                                                                         {"value": True}]}}))
    assert cells[0].resolved_params["normalize"] == {"filters": [{"filter": "mlp", "value": False}, {"value": True}]}


def test_bad_form_in_a_sweep_file_is_one_line_exit_2(built_zoo, tmp_path):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(yaml.safe_dump(sweep_dict("ties", {"density": {"gradient": [0.9, 1.5]}})))
    proc = cli("validate", str(sweep), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "density" in lines[0] and "1.5" in lines[0] and str(sweep) in lines[0]


def test_whole_model_adapter_refuses_forms(built_zoo):
    from study.errors import UserError

    with pytest.raises(UserError, match="whole-model adapter"):
        sweep_cells(sweep_dict("mergekit:ties", {"density": {"gradient": [0.9, 0.4]}}))


def test_prepass_that_reads_a_per_tensor_value_is_an_error_naming_it(built_zoo):
    """TIES' global trim reads density once for the whole model: per tensor it means nothing."""
    from study.errors import MethodError

    ctx, cells = sweep_cells(sweep_dict("ties", {"density": {"gradient": [0.9, 0.4]}, "trim_scope": "global"}))
    with pytest.raises(MethodError, match="'density': its prepass reads it once"):
        merged_cell(ctx, cells[0])
    ctx, cells = sweep_cells(sweep_dict("ties", {"lambda": {"gradient": [1.0, 0.5]}, "trim_scope": "global"}))
    assert set(merged_cell(ctx, cells[0]))  # a parameter the prepass does not read may vary per tensor


def test_zoo_names_in_a_mergekit_config(built_zoo, tmp_path):
    """``zoo:NAME`` inside a ``merge --config`` YAML is the built zoo's model; the merge equals the sweep cell's."""
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(mergekit_yaml("ties_gradient_density"), sort_keys=False))
    proc = cli("merge", "--config", str(config), "--out", str(tmp_path / "out"))
    assert "native ties" in proc.stdout, proc.stdout
    ctx, cells = sweep_cells(sweep_dict(*CASES["ties_gradient_density"][:2]))
    ours = merged_cell(ctx, next(c for c in cells if list(c.checkpoints) == SUBSET))
    theirs = tensors(tmp_path / "out")
    assert set(ours) == set(theirs) and all(torch.equal(ours[n], theirs[n]) for n in ours)


def test_unknown_zoo_name_in_a_mergekit_config_is_one_line(built_zoo, tmp_path):
    from study.errors import UserError
    from study.mergekit_config import plan_config

    bad = mergekit_yaml("ties_gradient_density")
    bad["models"][1]["model"] = "zoo:substract"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError) as err:
        plan_config(config)
    message = str(err.value)
    assert "\n" not in message and str(config) in message, message
    assert "models[1].model: unknown zoo model 'zoo:substract'" in message and "zoo:sub," in message, message


def test_report_tables_show_the_form(built_zoo, tmp_path):
    """The report's tables carry the grid point as written: a form is its JSON (a label, the form's mapping)."""
    from study.analysis.report import write_report
    from study.record import Outcome, Record, Timing
    from study.store import Store

    ctx, cells = sweep_cells(sweep_dict("ties", {"density": [0.5, {"gradient": [0.9, 0.4]}]}))
    store = Store(tmp_path / "store")
    for cell in ctx.plan.unique_cells():
        store.put(Record(cell_id=cell.cell_id, cell=cell, finished="2026-01-01T00:00:00+00:00", status=Outcome.DONE,
                         timing=Timing(total_s=1.0), scores={"zoo_add": {"metric": "exact_match", "score": 0.5,
                                                                          "metrics": {"exact_match": 0.5},
                                                                          "output_type": "generate_until"}}),
                  [{"task": "zoo_add", "doc_id": 0, "target": "1", "metrics": {"exact_match": 0.5}, "response": "1",
                    "filtered": "1", "n_tokens": 1, "truncated": False}])
    write_report(ctx, store, tmp_path / "report", check_tokens=False)
    report = (tmp_path / "report" / "report.md").read_text()
    assert '| {"density": [0.5, {"gradient": [0.9, 0.4]}]} |' in report  # the design's grid as written
    assert "| zoo | ties (density=grad[0.9→0.4]) | 2 |" in report  # each series table's row
    assert "| zoo | ties (density=0.5) | 2 |" in report
    import pandas as pd

    scores = pd.read_parquet(tmp_path / "report" / "scores.parquet")
    assert set(scores[scores.method == "ties"].params) == {'{"density": 0.5}', '{"density": {"gradient": [0.9, 0.4]}}'}


SPHERICAL = {
    "nuslerp": {"merge_method": "nuslerp", "base_model": "zoo:base", "dtype": "float32",
                "parameters": {"nuslerp_flatten": False},
                "models": [{"model": "zoo:add", "parameters": {"weight": [1.0, 0.4]}},
                           {"model": "zoo:sub", "parameters": {"weight": 0.7}}]},
    "multislerp": {"merge_method": "multislerp", "dtype": "float32",  # no base: the checkpoints' weights themselves
                   "models": [{"model": m, "parameters": {"weight": w}}
                              for m, w in zip(["zoo:add", "zoo:sub", "zoo:first"], [1.0, 0.5, [0.2, 0.8]])]},
    "karcher": {"merge_method": "karcher", "base_model": "zoo:base", "dtype": "float32",  # the base is an input
                "parameters": {"max_iter": 5}, "models": [{"model": "zoo:add"}, {"model": "zoo:sub"}]},
}


@pytest.mark.parametrize("name", list(SPHERICAL))
def test_spherical_configs_run_natively_as_mergekit(built_zoo, mergekit_api, tmp_path, name):
    """nuslerp, multislerp and karcher (native, equal to mergekit per tests/test_methods_spherical.py) run a
    mergekit configuration natively, gradients included, with mergekit's result."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    from study.mergekit_config import merge_config, plan_config

    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(SPHERICAL[name], sort_keys=False))
    plan = plan_config(config)
    assert plan.runner == "native" and plan.native.method == name, plan.reason
    ours = tensors(merge_config(plan, tmp_path / "ours"))
    run_merge(MergeConfiguration.model_validate(with_zoo_paths(SPHERICAL[name], built_zoo)), str(tmp_path / "theirs"),
              MergeOptions(device="cpu", quiet=True, random_seed=0))
    theirs = tensors(tmp_path / "theirs")
    assert set(ours) == set(theirs)
    for n in ours:
        torch.testing.assert_close(ours[n], theirs[n], atol=2e-6, rtol=1e-5, msg=lambda m, n=n: f"{n}: {m}")
