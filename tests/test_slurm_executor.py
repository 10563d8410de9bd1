"""The slurm executor against a real Slurm (scripts/local_slurm.sh): job arrays, GPUs, preemption, failures, cancel.

No mocks: sweeps on the mini zoo go through ``merge-study run --executor slurm`` as a user runs them, and
every expectation about Slurm is polled with a deadline (accounting lags the controller by seconds).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fixtures.slurm import store_records, wait_until, zoo_sweep
from fixtures.sweeps import REPO, cli

pytestmark = pytest.mark.timeout(900)
real_slurm = pytest.mark.slurm


def _jobs(store: Path) -> list[dict]:
    return json.loads((store / "slurm" / "jobs.json").read_text())["jobs"]


def _submitted(out: str) -> str:
    m = re.search(r"submitted Slurm job\(s\): (\d+)", out)
    assert m, out
    return m.group(1)


def _task_log(store: Path, task_id: str) -> str:
    path = store / "slurm" / "logs" / f"{task_id}_0_log.out"
    return path.read_text() if path.exists() else ""


def test_gpu_keys_are_left_out_unless_gpus_are_asked():
    from study.config import ExecutorSpec
    from study.executors.slurm import executor_parameters

    cpu = executor_parameters(ExecutorSpec(kind="slurm"), "s", n_tasks=3)
    assert not any("gpu" in key for key in cpu) and "slurm_partition" not in cpu
    assert cpu["slurm_array_parallelism"] == 3 and cpu["timeout_min"] == 240
    gpu = executor_parameters(ExecutorSpec(kind="slurm", gpus_per_task=2, partition="gpu", sbatch_extra={"qos": "low"}),
                              "s", n_tasks=100)
    assert gpu["gpus_per_node"] == 2 and gpu["slurm_partition"] == "gpu" and gpu["slurm_array_parallelism"] == 32
    assert gpu["slurm_additional_parameters"] == {"qos": "low"}


def test_chunks_never_mix_bases_and_keep_plan_order():
    from study.executors.slurm import chunk_cells
    from study.plan import Cell

    cells = [Cell(f"c{i}", "ab"[i % 2], "base", {}, {}, 0, 0, ()) for i in range(7)]
    assert chunk_cells(cells, 2) == [["c0", "c2"], ["c4", "c6"], ["c1", "c3"], ["c5"]]


def test_folded_array_task_ids_are_expanded():
    from study.executors.slurm_query import parse_accounting

    sacct = "JobID|State\n12_[0-2,5%4]|PENDING\n12_3|CANCELLED by 1000\n12_3.batch|CANCELLED\n13|COMPLETED\n14_7|\n"
    assert parse_accounting(sacct) == {"12_0": "PENDING", "12_1": "PENDING", "12_2": "PENDING", "12_5": "PENDING",
                                       "12_3": "CANCELLED", "13": "COMPLETED", "14_7": "UNKNOWN"}
    assert parse_accounting("") == {}


@pytest.fixture
def zoo_root(built_zoo) -> str:
    return str(built_zoo.path.parent)


@pytest.fixture(autouse=True)
def _test_methods_importable(test_methods_dir, monkeypatch):
    """The misbehaving test methods, importable here and (sbatch passes the environment on) in the tasks."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(test_methods_dir), os.environ.get("PYTHONPATH", "")]))


def ms(*args: str, check: bool = True):
    """``merge-study --plugin ms_test_methods ARGS``."""
    return cli("--plugin", "ms_test_methods", *args, check=check)


def status(sweep: Path, store: Path) -> dict:
    return json.loads(ms("status", str(sweep), "--store", str(store), "--json").stdout)


@real_slurm
def test_the_smoke_sweep_runs_as_a_job_array_and_equals_a_local_run(slurm_cluster, zoo_root, tmp_path):
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    # the executor block is not part of any cell's key: these are the smoke sweep's cells, ids and all
    data["executor"] = {"cpus_per_task": 1, "mem_gb": 2, "time_min": 60, "cells_per_task": 4, "array_parallelism": 4}
    sweep = tmp_path / "smoke.yaml"
    sweep.write_text(yaml.safe_dump(data, sort_keys=False))
    store = tmp_path / "store"
    out = cli("run", str(sweep), "--executor", "slurm", "--wait", "--store", str(store), "--zoo", zoo_root)
    job = _submitted(out.stdout)
    counts = status(sweep, store)
    assert counts["done"] == counts["total"] == 17 and counts["failed"] == 0, out.stdout
    assert len(_jobs(store)) == 1 and len(_jobs(store)[0]["tasks"]) == 5  # 17 cells in chunks of 4: one array
    states = wait_until(lambda: (s := slurm_cluster.sacct_states(job)) and all(v == "COMPLETED" for v in s.values()) and s,
                        60, f"sacct to show every task of job {job} COMPLETED")
    assert sorted(states) == [f"{job}_{i}" for i in range(5)]
    # `status` merges the store's counts with the Slurm states of the sweep's tasks
    wait_until(lambda: status(sweep, store).get("slurm") == {"COMPLETED": 5}, 60, "status to show 5 COMPLETED")

    # a local run of a sample of the same cells, in this process, gives the same scores
    from study.prepare import prepare
    from study.runner import run_cells
    from study.store import Store

    ctx = prepare(sweep, zoo_root=Path(zoo_root))
    cells = ctx.plan.unique_cells()
    sample = [cells[0], cells[1], next(c for c in cells if c.method == "task_arithmetic"),
              next(c for c in cells if c.method == "ties")]
    run_cells(ctx, Store(tmp_path / "local"), sample)
    slurm_records, local_records = store_records(store), store_records(tmp_path / "local")
    for cell in sample:
        assert slurm_records[cell.cell_id]["scores"] == local_records[cell.cell_id]["scores"], cell.describe()
    assert re.search(r":slurm\d+_\d+$", slurm_records[cells[0].cell_id]["worker"])  # computed by an array task


@real_slurm
def test_a_gpu_task_gets_cuda_visible_devices_and_falls_back_to_cpu(slurm_cluster, zoo_root, tmp_path):
    if slurm_cluster.gpus == 0:
        pytest.skip("the cluster has no gres/gpu (start it with SLURM_FAKE_GPUS=2)")
    sweep = zoo_sweep(tmp_path / "gpu.yaml", "gpu", checkpoints=("zoo:add",), ks=(1,),
                      executor={"gpus_per_task": 1, "cells_per_task": 2})
    store = tmp_path / "store"
    out = ms("run", str(sweep), "--executor", "slurm", "--wait", "--store", str(store), "--zoo", zoo_root)
    job = _submitted(out.stdout)
    assert status(sweep, store)["done"] == 2, out.stdout
    log = _task_log(store, _jobs(store)[0]["task_ids"][0])
    m = re.search(r"device (\w+), CUDA_VISIBLE_DEVICES=([^,\s]+)", log)
    assert m, log
    device, cvd = m.groups()
    assert cvd.isdigit() and int(cvd) < slurm_cluster.gpus
    import torch

    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    tres = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", "AllocTRES"], capture_output=True, text=True).stdout
    assert "gres/gpu=1" in tres, tres


@real_slurm
def test_too_many_gpus_is_an_error_before_anything_is_submitted(slurm_cluster, zoo_root, tmp_path):
    sweep = zoo_sweep(tmp_path / "greedy.yaml", "greedy", checkpoints=("zoo:add",), ks=(1,),
                      executor={"gpus_per_task": slurm_cluster.gpus + 1})
    out = ms("run", str(sweep), "--executor", "slurm", "--store", str(tmp_path / "store"), "--zoo", zoo_root,
              check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "gpus_per_task" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "store" / "slurm" / "jobs.json").exists()


@real_slurm
def test_a_preempted_task_resumes_without_redoing_finished_cells(slurm_cluster, zoo_root, tmp_path):
    if "high" not in slurm_cluster.partitions:
        pytest.skip("the cluster has no preempting partition 'high' (scripts/local_slurm.sh makes one)")
    # the last cell naps 30 s, so the task is certainly inside a cell when the preemption comes
    sweep = zoo_sweep(tmp_path / "pre.yaml", "preempt", checkpoints=("zoo:add", "zoo:capital"),
                      methods=[{"name": "nap", "params": {"seconds": 30.0}}],
                      executor={"partition": "debug", "cells_per_task": 10})
    store = tmp_path / "store"
    job = _submitted(ms("run", str(sweep), "--executor", "slurm", "--store", str(store), "--zoo",
                         zoo_root).stdout)
    task = _jobs(store)[0]["task_ids"][0]  # one chunk: submitit sends it as a plain job, not an array
    wait_until(lambda: re.search(r"start  \w+  zoo: nap", _task_log(store, task)), 300, "the napping cell to start")
    before = store_records(store)
    assert len(before) == 3 and slurm_cluster.squeue_states(job).get(task) == "RUNNING"
    # a job in partition "high" that needs the whole node preempts (requeues) the running task
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", str(slurm_cluster.cpus), "--mem=100M",
                           "-t", "2", "-o", str(tmp_path / "high.out"), "--wrap", "sleep 3"],
                          capture_output=True, text=True, check=True).stdout.strip()
    wait_until(lambda: "requeueing" in _task_log(store, task), 120, "the task to checkpoint and requeue")
    out = ms("run", str(sweep), "--executor", "slurm", "--wait", "--store", str(store), "--zoo", zoo_root)
    assert "nothing new to submit" in out.stdout and "1 computed" in out.stdout, out.stdout
    after = store_records(store)
    assert len(after) == 4 and all(r["status"] == "done" for r in after.values())
    for cid, record in before.items():
        assert after[cid] == record, "a cell finished before preemption was computed again"
    log = _task_log(store, task)
    assert "restarts 1" in log and "with 1 cell(s) left: requeueing" in log, log
    assert all(log.count(f"start  {cid}") == 1 for cid in before), log  # not started again after requeue
    history = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True,
                             text=True).stdout.split()
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    assert slurm_cluster.sacct_states(high).get(high) == "COMPLETED"


@real_slurm
def test_a_failing_cell_is_recorded_with_its_traceback_while_the_rest_finish(slurm_cluster, zoo_root, tmp_path):
    sweep = zoo_sweep(tmp_path / "boom.yaml", "boom", checkpoints=("zoo:add", "zoo:capital"),
                      methods=[{"name": "explode"}, {"name": "task_arithmetic", "params": {"lambda": 1.0}}],
                      executor={"cells_per_task": 3})
    store = tmp_path / "store"
    out = ms("run", str(sweep), "--executor", "slurm", "--wait",
              "--store", str(store), "--zoo", zoo_root)
    job = _submitted(out.stdout)
    assert "4 computed, 0 cached, 1 failed" in out.stdout, out.stdout
    failed = [r for r in store_records(store).values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["cell"]["method"] == "explode"
    assert "RuntimeError: explode" in failed[0]["error"]
    assert "Traceback" in failed[0]["traceback"] and "ms_test_methods.py" in failed[0]["traceback"]
    # the task that held the failing cell went on with its next cell and ended normally
    wait_until(lambda: set(slurm_cluster.sacct_states(job).values()) == {"COMPLETED"}, 60, "all tasks COMPLETED")


@real_slurm
def test_cancel_stops_the_sweep_and_a_later_run_completes_it(slurm_cluster, zoo_root, tmp_path):
    # one task at a time, and the last cell naps: the sweep is certainly unfinished when the cancel comes
    nap = [{"name": "nap", "params": {"seconds": 20.0}}]
    sweep = zoo_sweep(tmp_path / "cancel.yaml", "cancel", checkpoints=("zoo:add", "zoo:capital"), methods=nap,
                      executor={"cells_per_task": 1, "array_parallelism": 1})
    store = tmp_path / "store"
    job = _submitted(ms("run", str(sweep), "--executor", "slurm", "--store", str(store), "--zoo", zoo_root).stdout)
    wait_until(lambda: len(store_records(store)) >= 1, 300, "the first cell to finish")
    out = ms("cancel", str(sweep), "--store", str(store))
    assert out.stdout.strip() == f"cancelled 1 job(s): {job}"
    assert slurm_cluster.squeue_states(job) == {}
    done_before = store_records(store)
    counts = status(sweep, store)
    assert counts["pending"] >= 2 and counts["done"] == len(done_before), counts
    wait_until(lambda: "CANCELLED" in slurm_cluster.sacct_states(job).values(), 30, "sacct to show CANCELLED")
    assert ms("cancel", str(sweep), "--store", str(store)).stdout.strip() == "no jobs to cancel"

    # resources are not part of a cell's key: the re-run may ask for more parallelism and still resumes
    zoo_sweep(sweep, "cancel", checkpoints=("zoo:add", "zoo:capital"), methods=nap,
              executor={"cells_per_task": 1, "array_parallelism": 4})
    out = ms("run", str(sweep), "--executor", "slurm", "--wait", "--store", str(store), "--zoo", zoo_root)
    assert _submitted(out.stdout) != job
    assert status(sweep, store)["done"] == 4
    after = store_records(store)
    assert all(after[cid] == rec for cid, rec in done_before.items())
    assert not list((store / "claims").glob("*.claim"))
