"""One cell contract: a cell is keyed on what decides its result — parameters resolved through the method's
schema, the method's version, the checkpoints' content — and on nothing else (spelling, paths, mtimes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures.reliability import copy_family, invoke, store_records, sweep_data, write_sweep
from study.checkpoints import ResolvedModel
from study.config import ModelRef, parse_sweep
from study.plan import build_plan

CKPTS = ["a", "b", "c"]


def _sweep(methods: list[dict], ks=(2, 3)) -> dict:
    return {"name": "contract", "bases": [{"name": "b", "model": "base", "checkpoints": CKPTS}],
            "methods": methods, "ks": list(ks), "evaluation": {"tasks": ["t"]}}


def _plan(data: dict):
    sweep = parse_sweep(data)
    labels = ["base", *CKPTS]
    models = {x: ResolvedModel(ModelRef(model=x), Path("/nonexistent") / x, f"id:{x}") for x in labels}
    return build_plan(sweep, models, check_applicability=False)


def _merge_ids(data: dict, method: str | None = None) -> list[set[str]]:
    """Cell ids per grid point (in sweep order), merge cells only."""
    plan = _plan(data)
    by_point: dict[str, set[str]] = {}
    for c in plan.cells:
        if c.k >= 2 and (method is None or c.method == method):
            by_point.setdefault(f"{c.method_label}|{c.params_key}", set()).add(c.cell_id)
    return list(by_point.values())


def test_equivalent_spellings_are_one_cell_within_and_across_sweeps():
    spellings = [{"name": "ties"}, {"name": "ties", "params": {"density": 0.2}, "label": "b"},
                 {"name": "ties", "params": {"density": 0.20, "lambda": 1}, "label": "c"}]
    within = _merge_ids(_sweep(spellings))
    assert len(within) == 3 and within[0] == within[1] == within[2]
    assert len(_plan(_sweep(spellings)).unique_cells()) == 4 + len(within[0])
    across = [_merge_ids(_sweep([s]))[0] for s in spellings]
    assert across[0] == across[1] == across[2] == within[0]
    other = _merge_ids(_sweep([{"name": "ties", "params": {"density": 0.3}}]))[0]
    assert not other & within[0]


def test_resolved_params_are_the_method_schema_with_defaults():
    plan = _plan(_sweep([{"name": "task_arithmetic", "params": {"lambda": "1/k"}}]))
    cell = next(c for c in plan.cells if c.k == 2)
    assert cell.params == {"lambda": "1/k"}
    assert cell.resolved_params["lambda"] == 0.5 and set(cell.resolved_params) > {"lambda"}


PLUGIN = '''
from study.methods.schema import merge_method


@merge_method("contract_mean", version={version}, needs_base=False, elementwise=True)
def contract_mean(base, tensors, *, scale: float = 1.0):
    """The mean of the checkpoints, scaled."""
    return sum(tensors) / len(tensors) * scale
'''


def _plugin(root: Path, version: int) -> str:
    name = f"contract_plugin_v{version}"
    (root / f"{name}.py").write_text(PLUGIN.format(version=version))
    return name


def test_a_bumped_method_version_recomputes_only_that_methods_cells(rel_family, rel_tasks, tmp_path, monkeypatch):
    import study.methods.registry as registry

    monkeypatch.syspath_prepend(str(tmp_path))
    methods = ({"name": "task_arithmetic", "params": {"lambda": 0.5}}, {"name": "contract_mean"})
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[2], methods=methods))
    store = tmp_path / "store"
    outs, original = [], registry.METHODS
    for version in (1, 1, 2):
        monkeypatch.setattr(registry, "METHODS", original.copy())
        res = invoke("--plugin", _plugin(tmp_path, version), "run", str(sweep), "--store", str(store))
        assert res.exit_code == 0, res.stdout + res.stderr
        outs.append(res.stdout)
    assert "10 computed" in outs[0]  # base, 3 singles, 3 subsets x 2 methods
    assert "0 computed, 10 cached" in outs[1]
    assert "3 computed, 7 cached" in outs[2], "only the plugin's three cells are new"
    methods_of_new = [r["cell"]["method"] for r in store_records(store).values()]
    assert methods_of_new.count("contract_mean") == 6 and methods_of_new.count("task_arithmetic") == 3


def _bump_one_value(ckpt: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = next(ckpt.glob("*.safetensors"))
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 0.5
    save_file(tensors, path, metadata={"format": "pt"})


def test_touch_copy_and_move_keep_cells_and_a_changed_byte_recomputes_its_cells(rel_family, rel_tasks, tmp_path):
    from fixtures.methods import Family

    fam = copy_family(rel_family, tmp_path / "fam")
    store = tmp_path / "store"

    def run(family, name: str) -> str:
        sweep = write_sweep(tmp_path / name, sweep_data(family, rel_tasks, ks=[2]))
        res = invoke("run", str(sweep), "--store", str(store))
        assert res.exit_code == 0, res.stdout + res.stderr
        return res.stdout

    assert "7 computed" in run(fam, "a.yaml")
    for f in (tmp_path / "fam").rglob("*"):
        if f.is_file():
            os.utime(f, ns=(1, 10**18))
    assert "0 computed, 7 cached" in run(fam, "a.yaml"), "touched"
    copied = copy_family(fam, tmp_path / "copy")
    (tmp_path / "fam").rename(tmp_path / "moved")
    moved = Family(tmp_path / "moved" / fam.base.name, [tmp_path / "moved" / c.name for c in fam.checkpoints],
                   fam.arch)
    assert "0 computed, 7 cached" in run(copied, "copy.yaml"), "copied"
    assert "0 computed, 7 cached" in run(moved, "moved.yaml"), "moved"
    _bump_one_value(copied.checkpoints[0])
    assert "3 computed, 4 cached" in run(copied, "copy.yaml"), "its single and its two subsets recompute"


def _old_store(root: Path) -> Path:
    rec = root / "records" / "ab" / "ab12.json"
    rec.parent.mkdir(parents=True)
    data = {"schema": 1, "cell_id": "ab12", "status": "done", "cell": {}}
    from study.record import checksum

    rec.write_text(json.dumps({**data, "checksum": checksum(data)}))
    return root


def test_a_store_of_an_older_schema_is_refused_in_one_line(rel_sweep, tmp_path):
    store = _old_store(tmp_path / "old")
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for args in (["run", str(rel_sweep)], ["status", str(rel_sweep)], ["status"], ["report", "--out", str(tmp_path / "r")],
                 ["verify-store"]):
        res = invoke(*args, "--store", str(store))
        assert res.exit_code == 2, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "schema 1" in lines[0] and "new --store" in lines[0], (args, res.stderr)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert not (tmp_path / "r").exists()


def test_a_missing_store_is_one_line_and_nothing_is_created(rel_sweep, tmp_path):
    missing = tmp_path / "typo"
    for args in (["status", str(rel_sweep)], ["status"], ["report"], ["report", str(rel_sweep)], ["verify-store"],
                 ["cancel", str(rel_sweep)]):
        res = invoke(*args, "--store", str(missing))
        assert res.exit_code == 2, (args, res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "no result store" in res.stderr, (args, res.stderr)
        assert not missing.exists()


def test_record_round_trip_and_checksum():
    from study.plan import Cell
    from study.record import Outcome, Record, RecordError

    cell = Cell("c1", "b", "ties", {"density": 0.2}, {"density": 0.2}, 2, 0, ("a", "b"))
    rec = Record.new(cell, Outcome.DONE, worker="w", scores={"t": {"metric": "acc", "score": 0.5}})
    assert rec.machine.get("cpu") and rec.host
    back = Record.from_bytes(rec.to_bytes())
    assert back == rec and back.cell == cell and back.status is Outcome.DONE
    edited = json.loads(rec.to_bytes())
    edited["scores"]["t"]["score"] = 0.9
    with pytest.raises(RecordError, match="checksum"):
        Record.from_json(edited)

