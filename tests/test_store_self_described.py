"""The store describes itself: ``run`` saves its plan, so ``status`` and ``report`` need no sweep file,
checkpoint, zoo or network; a changed sweep file is listed change by change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

from fixtures.reliability import copy_family, invoke, sweep_data, write_sweep


def _ok(*args: str):
    res = invoke(*args)
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
    return res


def test_status_and_report_need_no_checkpoint_nor_sweep_file(rel_family, rel_tasks, tmp_path):
    fam = copy_family(rel_family, tmp_path / "fam")
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(fam, rel_tasks, ks=[2]))
    store = tmp_path / "store"
    _ok("run", str(sweep), "--store", str(store))
    status_before = _ok("status", str(sweep), "--store", str(store), "--json").stdout
    _ok("report", str(sweep), "--store", str(store), "--out", str(tmp_path / "r1"))
    plan = json.loads((store / "plan.json").read_text())
    assert {c["method"] for c in plan["cells"]} == {"base", "single", "task_arithmetic"}
    assert set(plan["identities"]) == {str(fam.base), *map(str, fam.checkpoints)}
    assert all(i.startswith("sha256:") for i in plan["identities"].values())

    shutil.move(tmp_path / "fam", tmp_path / "gone")
    with_sweep = _ok("status", str(sweep), "--store", str(store), "--json")
    assert with_sweep.stdout == status_before
    assert "using the plan stored" in with_sweep.stderr and len(with_sweep.stderr.strip().splitlines()) == 1
    sweep.rename(tmp_path / "gone.yaml")
    assert _ok("status", "--store", str(store), "--json").stdout == status_before
    assert "done=7" in _ok("status", "--store", str(store)).stdout
    _ok("report", "--store", str(store), "--out", str(tmp_path / "r2"))
    for name in ("scores.parquet", "summary.csv", "coverage.csv"):
        reader = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        pd.testing.assert_frame_equal(reader(tmp_path / "r1" / name), reader(tmp_path / "r2" / name))


def test_a_changed_sweep_file_is_listed_and_its_plan_used(rel_family, rel_tasks, tmp_path):
    data = sweep_data(rel_family, rel_tasks, ks=[2])
    sweep = write_sweep(tmp_path / "s.yaml", data)
    store = tmp_path / "store"
    _ok("run", str(sweep), "--store", str(store))
    data["methods"].append({"name": "ties", "params": {"density": 0.5}})
    data["subsets"] = {"per_k": 2}
    write_sweep(sweep, data)
    res = _ok("status", str(sweep), "--store", str(store), "--json")
    notes = res.stderr.strip().splitlines()
    assert "changed since the plan stored" in notes[0]
    assert "  method added: ties(density=0.5)" in notes and any(n.startswith("  subsets changed:") for n in notes)
    counts = json.loads(res.stdout)
    assert counts["pending"] == 2 and counts["done"] == 6, counts  # 2 ties subsets new; 2 of 3 TA subsets kept
    rerun = _ok("run", str(sweep), "--store", str(store))
    assert "replaces the plan stored" in rerun.stderr and "  method added: ties(density=0.5)" in rerun.stderr
    again = _ok("run", str(sweep), "--store", str(store))
    assert "replaces the plan stored" not in again.stderr


def test_report_of_a_store_with_only_the_base_and_singles(rel_family, rel_tasks, tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[1]))
    store = tmp_path / "store"
    _ok("run", str(sweep), "--store", str(store))
    _ok("report", "--store", str(store), "--out", str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "no merge cells" in md and "## Coverage" in md
    reference = pd.read_csv(tmp_path / "r" / "reference.csv")
    assert list(reference.reference) == ["single"] and reference.n.iloc[0] == 3


def test_provenance_names_the_zoo_the_machines_and_reads_git_first(fake_study, tmp_path, monkeypatch):
    import dataclasses

    import study.analysis.report as report_mod

    out = tmp_path / "r"
    seen: list[bool] = []
    real = report_mod.git_commit
    monkeypatch.setattr(report_mod, "git_commit", lambda: seen.append(out.exists()) or real())
    ctx = dataclasses.replace(fake_study.ctx, zoo="zoo-digest-one")
    report_mod.write_report(ctx, fake_study.store, out, check_tokens=False)
    assert seen == [False], "git status is read before anything is written"
    md = (out / "report.md").read_text()
    assert "| zoo digest | zoo-digest-one |" in md and "zoo differs" not in md
    assert json.loads((out / "provenance.json").read_text())["zoo"] == "zoo-digest-one"
    report_mod.write_report(dataclasses.replace(ctx, zoo="zoo-digest-two"), fake_study.store, out, check_tokens=False)
    md = (out / "report.md").read_text()
    assert "zoo differs from the previous report here | yes: that report used zoo-digest-one" in md
    (out / "provenance.json").unlink()
    report_mod.write_report(dataclasses.replace(ctx, zoo="zoo-digest-three"), fake_study.store, out, check_tokens=False)
    assert "that report used zoo-digest-two" in (out / "report.md").read_text(), "read from report.md"


def test_provenance_lists_the_runs_cpu_and_libraries(rel_family, rel_tasks, tmp_path):
    from study.machine import describe_machine

    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[1]))
    store = tmp_path / "store"
    _ok("run", str(sweep), "--store", str(store))
    _ok("report", "--store", str(store), "--out", str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    me = describe_machine()
    for item in ("CPU model", "instruction set", "torch", "transformers", "lm-eval"):
        assert f"| {item} of the runs |" in md, item
    assert me["cpu"] in md and me["isa"] in md
    record = json.loads(next((store / "records").glob("*/*.json")).read_text())
    assert record["machine"]["torch"] == me["torch"]
    assert yaml.safe_load((store / "sweep.yaml").read_text())["name"] == "rel"
    assert Path(json.loads((store / "plan.json").read_text())["source"]) == sweep.resolve()


def _zoo_sweep(path: Path, tasks: list[str]) -> Path:
    return write_sweep(path, {"name": "z", "bases": [{"name": "zoo", "model": "zoo:base",
                                                       "checkpoints": ["zoo:add", "zoo:sub"]}],
                              "methods": [{"name": "task_arithmetic"}], "ks": [1, 2], "subsets": {"per_k": 1},
                              "evaluation": {"tasks": tasks, "limit": 3, "batch_size": 8, "max_gen_toks": 4}})


def test_zoo_task_spellings_are_one_cell(fake_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDY_ZOO", str(fake_zoo.root))
    ids = []
    for i, tasks in enumerate((["zoo:add", "zoo:first"], ["zoo_add", "zoo_first"], ["zoo:zoo_add", "zoo:first"])):
        out = _ok("run", str(_zoo_sweep(tmp_path / f"s{i}.yaml", tasks)), "--dry-run").stdout
        ids.append({line.split()[0] for line in out.splitlines()[:-1]})
    assert len(ids[0]) == 4 and ids[0] == ids[1] == ids[2]


def test_status_and_report_of_a_zoo_sweep_survive_the_zoo_moving_away(fake_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDY_ZOO", str(fake_zoo.root))
    sweep, store = _zoo_sweep(tmp_path / "z.yaml", ["zoo:add", "zoo:first"]), tmp_path / "store"
    _ok("run", str(sweep), "--store", str(store))
    before = _ok("status", str(sweep), "--store", str(store), "--json").stdout
    assert json.loads(before)["done"] == 4
    _ok("report", str(sweep), "--store", str(store), "--out", str(tmp_path / "r1"))
    shutil.move(fake_zoo.root, tmp_path / "zoo-gone")
    moved = _ok("status", str(sweep), "--store", str(store), "--json")
    assert moved.stdout == before and "using the plan stored" in moved.stderr
    assert _ok("status", "--store", str(store), "--json").stdout == before
    _ok("report", "--store", str(store), "--out", str(tmp_path / "r2"))
    for name in ("scores.parquet", "summary.csv"):
        reader = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        pd.testing.assert_frame_equal(reader(tmp_path / "r1" / name), reader(tmp_path / "r2" / name))
    assert "sha256:fake" in (tmp_path / "r2" / "report.md").read_text()
