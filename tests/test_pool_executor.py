"""The pool executor: one worker process per GPU (or N CPU slots), cells shared out through one queue and
the store's claims; a worker that dies has its cell recorded as failed and the pool finishes the rest."""

from __future__ import annotations

import json
import os

import pytest

from fixtures.slurm import store_records, zoo_sweep
from fixtures.sweeps import cli
from study.executors.pool import Slot, plan_slots, visible_gpus


def test_one_slot_per_gpu_each_with_its_own_device():
    assert plan_slots(None, ["0", "1"], cpus=8) == [Slot(0, "0", 4), Slot(1, "1", 4)]
    assert plan_slots(1, ["0", "1"], cpus=8) == [Slot(0, "0", 8)]
    assert plan_slots(4, ["GPU-3f2a"], cpus=8) == [Slot(0, "GPU-3f2a", 8)]  # never more workers than GPUs


def test_cpu_slots_share_the_cores():
    assert plan_slots(None, [], cpus=8) == [Slot(0, None, 8)]
    assert plan_slots(3, [], cpus=8) == [Slot(i, None, 2) for i in range(3)]
    assert plan_slots(16, [], cpus=2)[-1] == Slot(15, None, 1)


@pytest.mark.parametrize("env, expected", [("0,2", ["0", "2"]), ("", []), ("-1", []), ("GPU-a, GPU-b", ["GPU-a", "GPU-b"])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, env, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected


def _scores(records: dict[str, dict]) -> dict[str, dict]:
    return {cid: r.get("scores") for cid, r in records.items()}


def test_pool_results_equal_a_local_run(built_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CPU slots, also on a GPU machine
    zoo = str(built_zoo.path.parent)
    sweep = zoo_sweep(tmp_path / "pool.yaml", "pool", checkpoints=("zoo:add", "zoo:capital"), executor={"workers": 2})
    out = cli("run", str(sweep), "--executor", "pool", "--store", str(tmp_path / "pool"), "--zoo", zoo)
    assert "pool: 2 worker(s) on 2 CPU slot(s)" in out.stdout
    assert "4 computed, 0 cached, 0 failed" in out.stdout, out.stdout
    cli("run", str(sweep), "--executor", "local", "--store", str(tmp_path / "local"), "--zoo", zoo)
    pooled, local = store_records(tmp_path / "pool"), store_records(tmp_path / "local")
    assert _scores(pooled) == _scores(local)
    assert len({r["worker"] for r in pooled.values()}) == 2, "both workers should have computed cells"
    assert not list((tmp_path / "pool" / "claims").glob("*.claim"))
    again = cli("run", str(sweep), "--executor", "pool", "--store", str(tmp_path / "pool"), "--zoo", zoo)
    assert "0 computed, 4 cached" in again.stdout


def test_a_worker_killed_mid_cell_is_recorded_failed_and_the_rest_finish(built_zoo, tmp_path, monkeypatch,
                                                                         test_methods_dir):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(test_methods_dir), os.environ.get("PYTHONPATH", "")]))
    sweep = zoo_sweep(tmp_path / "die.yaml", "die", checkpoints=("zoo:add", "zoo:capital"), executor={"workers": 2},
                      methods=[{"name": "die"}, {"name": "task_arithmetic", "params": {"lambda": 1.0}}])
    store = tmp_path / "store"
    cli("--plugin", "ms_test_methods", "run", str(sweep), "--executor", "pool", "--store", str(store),
        "--zoo", str(built_zoo.path.parent))
    status = cli("--plugin", "ms_test_methods", "status", str(sweep), "--store", str(store), "--json")
    assert json.loads(status.stdout) == {"done": 4, "failed": 1, "pending": 0, "not_applicable": 0, "total": 5}
    records = store_records(store)
    failed = [r for r in records.values() if r["status"] == "failed"]
    assert len(records) == 5 and len(failed) == 1, {r["cell"]["method"]: r["status"] for r in records.values()}
    assert failed[0]["cell"]["method"] == "die"
    assert "WorkerDied" in failed[0]["error"] and "signal 9" in failed[0]["error"]
