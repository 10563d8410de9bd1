"""Weights & Biases logging (``study.tracking_wandb``) in wandb's offline mode: real run directories, read back
record by record from their ``.wandb`` files, as ``wandb sync`` would upload them."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from fixtures.reliability import invoke, run_ms, sweep_data, write_sweep


# --- reading an offline run back --------------------------------------------------------------------------

def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-<id>.wandb`` file: W&B's LevelDB-style log (a 7-byte header, 32 KiB
    blocks of chunks, each with a 7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, chunks, partial = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of a block
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            chunks.append(partial + chunk)
    records = []
    for chunk in chunks:
        rec = pb.Record()
        rec.ParseFromString(chunk)
        records.append(rec)
    return records


def _items(items: Any) -> dict[str, Any]:
    """History or summary items, keyed by their (nested) key joined with '/'."""
    return {"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json) for i in items}


class OfflineRun:
    """One ``offline-run-*`` directory: its run record, history rows and files."""

    def __init__(self, path: Path):
        self.path = path
        (wandb_file,) = path.glob("run-*.wandb")
        records = wandb_records(wandb_file)
        self.run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        self.history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
        self.exit = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]

    def rows(self) -> list[dict[str, Any]]:
        return [h for h in self.history if "cell/key" in h]

    def table(self, key: str) -> dict[str, Any]:
        """The last logged table under ``key``, read from its file in the run directory."""
        (entry,) = [h for h in self.history if f"{key}/_type" in h][-1:]
        assert entry[f"{key}/_type"] == "table-file"
        return json.loads((self.path / "files" / entry[f"{key}/path"]).read_text())


def offline_runs(root: Path) -> list[OfflineRun]:
    return [OfflineRun(p) for p in sorted(root.glob("wandb/offline-run-*"))]


# --- fixtures -----------------------------------------------------------------------------------------------

@pytest.fixture
def wandb_env(tmp_path) -> dict[str, str]:
    """Offline, with every directory wandb writes (config, cache, artifact staging) under ``tmp_path``."""
    return {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_CONFIG_DIR": str(tmp_path / "wbc"),
            "WANDB_CACHE_DIR": str(tmp_path / "wbcache"), "WANDB_DATA_DIR": str(tmp_path / "wbdata"),
            "WANDB_SILENT": "true"}


def _ok(res: Any) -> Any:
    assert res.returncode == 0, res.stdout + res.stderr
    return res


# --- end to end -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_sweep_logs_a_row_per_cell_resumes_its_run_and_logs_its_report(rel_family, rel_tasks, tmp_path, wandb_env):
    (tmp_path / "wb").mkdir()
    logging = {"wandb": {"project": "ms-test", "tags": ["ci"], "group": "g"}}
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[1], logging=logging))
    store = tmp_path / "store"
    first = _ok(run_ms("run", str(sweep), "--store", str(store), env=wandb_env))
    assert "W&B: offline run" in first.stderr and "wandb sync" in first.stderr
    state = json.loads((store / "wandb.json").read_text())
    (part1,) = offline_runs(tmp_path / "wb")
    assert part1.run.run_id == state["run_id"] and part1.run.project == "ms-test"
    assert list(part1.run.tags) == ["ci"] and part1.run.run_group == "g" and part1.run.display_name == "rel"
    rows = part1.rows()
    plan = json.loads((store / "plan.json").read_text())
    assert sorted(r["cell/key"] for r in rows) == sorted({c["cell_id"] for c in plan["cells"]}) == sorted(state["logged"])
    assert len(rows) == 4  # the base and three singles
    for row in rows:
        assert row["cell/outcome"] == "done" and row["cell/method"] in ("base", "single")
        assert {"cell/base", "cell/params", "cell/k", "cell/subset", "cell/score/rel_mc", "cell/score/rel_gen"} <= set(row)
        assert row["cell/avg"] == pytest.approx((row["cell/score/rel_mc"] + row["cell/score/rel_gen"]) / 2)
    table = part1.table("cells")
    assert len(table["data"]) == 4 and {"key", "outcome", "avg", "score/rel_mc"} <= set(table["columns"])
    assert part1.exit and part1.exit[0].exit_code == 0

    # the same sweep with merges added: a second part of the same run, rows of the new cells only, later steps
    write_sweep(sweep, sweep_data(rel_family, rel_tasks, ks=[1, 2], logging=logging))
    _ok(run_ms("run", str(sweep), "--store", str(store), env=wandb_env))
    part1, part2 = offline_runs(tmp_path / "wb")
    assert part2.run.run_id == part1.run.run_id and part2.run.resume
    new = part2.rows()
    assert len(new) == 3 and {r["cell/method"] for r in new} == {"task_arithmetic"} and new[0]["cell/k"] == 2
    assert min(r["_step"] for r in new) > max(r["_step"] for r in part1.history)
    assert len(part2.table("cells")["data"]) == 7

    # the report, from the store alone: the same run, summary.csv as a table and every figure as an image;
    # without $WANDB_DIR the run directory is written under the store
    env = {k: v for k, v in wandb_env.items() if k != "WANDB_DIR"}
    report = _ok(run_ms("report", "--store", str(store), "--out", str(tmp_path / "r"), env=env))
    assert len(offline_runs(tmp_path / "wb")) == 2
    (part3,) = offline_runs(store)
    assert part3.run.run_id == part1.run.run_id and not part3.rows()
    summary = part3.table("report/summary")
    assert summary["columns"][:3] == ["base", "method", "params"] and len(summary["data"]) == 1
    logged = part3.history[-1]
    images = {k.split("/")[2] for k, v in logged.items() if k.startswith("report/figure/") and v == "image-file"}
    pngs = {Path(line).stem for line in report.stdout.splitlines() if line.endswith(".png")}
    assert pngs and images == pngs
    for stem in pngs:
        image = part3.path / "files" / logged[f"report/figure/{stem}/path"]
        assert image.is_file() and image.stat().st_size > 0


@pytest.mark.slow
def test_without_logging_wandb_is_never_imported(rel_family, rel_tasks, tmp_path, fault_shim):
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[1]))
    store, modules = tmp_path / "store", tmp_path / "modules.txt"
    for args in (("run", str(sweep), "--store", str(store)), ("report", "--store", str(store), "--out", str(tmp_path / "r"))):
        _ok(run_ms(*args, shim=fault_shim, env={"MS_FAULT_MODULES": str(modules)}))
        imported = modules.read_text().split()
        assert "study.tracking_wandb" in imported and "wandb" not in imported, args
    assert not (store / "wandb.json").exists() and not (store / "wandb").exists()


def test_asking_for_wandb_without_it_is_one_line_and_writes_nothing(rel_family, rel_tasks, tmp_path, fault_shim):
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[1]))
    res = run_ms("run", str(sweep), "--store", str(tmp_path / "store"), "--wandb", shim=fault_shim,
                 env={"MS_FAULT_BLOCK": "wandb"})
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().count("\n") == 0 and "merge-study[wandb]" in res.stderr
    assert not (tmp_path / "store").exists()


# --- schema and keys ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("logging, where", [({"wandb": {"projct": "x"}}, "logging.wandb.projct: unknown field"),
                                            ({"mlflow": {}}, "logging.mlflow: unknown field"),
                                            ({"wandb": {"mode": "live"}}, "logging.wandb.mode")])
def test_a_bad_logging_key_is_one_line_and_exit_2(rel_family, rel_tasks, tmp_path, logging, where):
    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[1], logging=logging))
    res = invoke("validate", str(sweep))
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and where in res.stderr and str(sweep) in res.stderr


def test_logging_changes_no_cell_key_nor_the_sweep_hash(rel_family, rel_tasks, tmp_path):
    from study.prepare import prepare

    plain = write_sweep(tmp_path / "a.yaml", sweep_data(rel_family, rel_tasks, ks=[1, 2]))
    logged = write_sweep(tmp_path / "b.yaml", sweep_data(rel_family, rel_tasks, ks=[1, 2], logging={
        "wandb": {"project": "p", "entity": "e", "mode": "online", "name": "n", "tags": ["t"], "group": "g"}}))
    a, b = prepare(plain), prepare(logged)
    assert b.sweep.logging.wandb is not None
    assert [c.cell_id for c in a.plan.cells] == [c.cell_id for c in b.plan.cells]
    assert a.plan.sweep_hash == b.plan.sweep_hash and a.plan.to_json() == b.plan.to_json()


def test_flags_switch_logging_on_and_off(rel_family, rel_tasks, tmp_path):
    from study.config import load_sweep
    from study.tracking_wandb import wandb_settings

    plain = load_sweep(write_sweep(tmp_path / "a.yaml", sweep_data(rel_family, rel_tasks, ks=[1])))
    logged = load_sweep(write_sweep(tmp_path / "b.yaml", sweep_data(rel_family, rel_tasks, ks=[1],
                                                                   logging={"wandb": {"project": "p"}})))
    assert wandb_settings(plain) is None and wandb_settings(logged, False) is None
    assert wandb_settings(plain, True).project == "merge-study" and wandb_settings(logged).project == "p"
    assert wandb_settings(plain, None, "q").project == "q" and wandb_settings(logged, None, "q").project == "q"


# --- rows, and wandb failing -----------------------------------------------------------------------------

def _record(status: str, **fields: Any) -> Any:
    from study.plan import Cell
    from study.record import Outcome, Record

    cell = Cell("abc", "tiny", "ties", {"density": 0.2}, {"density": 0.2}, 2, 1, ("a", "b"), "TIES")
    return cell, Record.new(cell, Outcome(status), worker="w", **fields)


def test_a_row_has_the_cell_its_outcome_and_benchmark_scores():
    from study.tracking_wandb import cell_row

    cell, done = _record("done", scores={"g": {"score": 0.5, "benchmark": "g"}, "g_leaf": {"score": 0.1, "benchmark": "g"},
                                          "t": {"score": 0.25}})
    row = cell_row(cell, done)
    assert row["key"] == "abc" and row["method"] == "ties" and row["label"] == "TIES" and row["k"] == 2
    assert row["params"] == '{"density": 0.2}' and row["subset"] == 1 and row["outcome"] == "done"
    assert row["score/g"] == 0.5 and row["score/t"] == 0.25 and "score/g_leaf" not in row
    assert row["avg"] == pytest.approx(0.375)
    _, failed = _record("failed", error="RuntimeError: boom")
    failed_row = cell_row(cell, failed)
    assert failed_row["outcome"] == "failed" and failed_row["error"] == "RuntimeError: boom" and "avg" not in failed_row
    assert cell_row(cell, None)["outcome"] == "pending"


class _BrokenRun:
    step = 0

    def __init__(self):
        self.calls = 0

    def log(self, data: dict, step: int | None = None) -> None:
        self.calls += 1
        raise OSError("disk quota exceeded")


def test_a_failing_wandb_warns_once_and_logging_stops(tmp_path, capsys):
    from study.config import WandbSpec
    from study.plan import Plan
    from study.store import Store
    from study.tracking_wandb import RunState, Tracker

    cell, done = _record("done", scores={"t": {"score": 0.5}})
    store = Store(tmp_path / "store")
    store.put(done)
    run = _BrokenRun()
    tracker = Tracker(store, RunState(run_id="x", spec=WandbSpec()), run)  # an opened run that then breaks
    plan = Plan(sweep=None, cells=[cell])
    assert tracker.log_new_cells(plan) == 0 and tracker.log_new_cells(plan) == 0
    tracker.log_cells_table(plan)
    tracker.finish()
    err = capsys.readouterr().err
    assert err.count("warning: W&B logging stopped (OSError: disk quota exceeded)") == 1
    assert run.calls == 1 and tracker.failed
