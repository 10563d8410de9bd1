"""The local Slurm cluster itself, driven through submitit as the slurm executor drives it.

These check the cluster that ``scripts/local_slurm.sh`` starts, so that a failure in the executor tests can be
told apart from a broken cluster: jobs and arrays run, a GPU request is really scheduled on the fake gres and
sets CUDA_VISIBLE_DEVICES, and accounting records a cancellation (without it submitit waits forever).
Each test uses a fresh ``AutoExecutor(cluster="slurm")``: submitit cannot unset a parameter once set.
"""

from __future__ import annotations

import os
import sys

import pytest

from fixtures.slurm import wait_job_done, wait_until

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")  # comes with submitit

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

# The job process imports nothing from tests/, so ship this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _executor(folder, **params):
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(timeout_min=10, cpus_per_task=1, mem_gb=1, slurm_partition="debug", **params)
    return ex


def _env_report(x: int) -> dict:
    return {
        "x2": 2 * x,
        "job": os.environ.get("SLURM_JOB_ID"),
        "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def test_a_job_runs(slurm_cluster, tmp_path):
    job = _executor(tmp_path).submit(_env_report, 21)
    wait_job_done(job, 60)
    out = job.result()
    assert out["x2"] == 42
    assert out["job"] == str(job.job_id)


def test_an_array_runs(slurm_cluster, tmp_path):
    jobs = _executor(tmp_path, slurm_array_parallelism=4).map_array(_env_report, range(4))
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, "map_array must submit one array job"
    for job in jobs:
        wait_job_done(job, 90)
    results = [j.result() for j in jobs]
    assert [r["x2"] for r in results] == [0, 2, 4, 6]
    assert sorted(r["task"] for r in results) == ["0", "1", "2", "3"]


def test_a_gpu_job_gets_cuda_visible_devices(slurm_cluster, tmp_path):
    if slurm_cluster.gpus == 0:
        pytest.skip("the cluster has no gres/gpu (start it with SLURM_FAKE_GPUS=2)")
    job = _executor(tmp_path, gpus_per_node=1).submit(_env_report, 1)
    wait_job_done(job, 60)
    cvd = job.result()["cvd"]
    assert cvd is not None and cvd.isdigit() and int(cvd) < slurm_cluster.gpus, cvd


def test_too_many_gpus_fail_at_submission(slurm_cluster, tmp_path):
    with pytest.raises(submitit.core.utils.FailedJobError, match="sbatch"):
        _executor(tmp_path, gpus_per_node=slurm_cluster.gpus + 1).submit(_env_report, 1)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_sacct_sees_a_cancelled_job(slurm_cluster, tmp_path):
    if not slurm_cluster.accounting:
        pytest.skip("the cluster runs without accounting (SLURM_ACCOUNTING=0): sacct cannot see cancellations")
    job = _executor(tmp_path).submit(_sleep, 300)
    wait_until(lambda: slurm_cluster.squeue_states(job.job_id).get(job.job_id) == "RUNNING", 60, "the job to run")
    job.cancel()
    wait_until(
        lambda: slurm_cluster.sacct_states(job.job_id).get(job.job_id) == "CANCELLED",
        30,
        f"sacct to report job {job.job_id} CANCELLED",
    )
    # submitit reads the same state through sacct, so its job.done() ends instead of waiting forever
    wait_until(lambda: job.done(force_check=True) and job.state.startswith("CANCELLED"), 30, "submitit to see it")
