"""Slurm job arrays through submitit: cells in chunks, one array task per chunk, the store as the truth.

Why it is built this way (measured against a real Slurm; see docs/architecture.md, "Slurm facts"):

* Tasks are idempotent and requeue themselves on preemption with the cells they had not finished
  (:mod:`study.executors.slurm_task`, the job side); Slurm is queried in :mod:`study.executors.slurm_query`.
* The outcome is judged from the store (cells) and from squeue/sacct (tasks), never from the first result
  pickle: submitit's in-job ``scontrol requeue`` can write an error result while Slurm runs the task again.
* A fresh ``AutoExecutor(cluster="slurm")`` per submission, and GPU keys left out (never ``None``) when no GPU
  is asked: submitit cannot unset a parameter once set.
* Job ids are kept in ``<store>/slurm/jobs.json`` so that ``status`` and ``cancel`` find a sweep's jobs.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from study.errors import UserError
from study.executors.base import RunSummary
from study.executors.slurm_query import (ACTIVE, accounting_states, live_job_ids, partition_gpus, queue_states, slurm,
                                         task_states)
from study.executors.slurm_task import CellsTask, TaskSpec

if TYPE_CHECKING:
    from study.config import ExecutorSpec
    from study.plan import Cell
    from study.prepare import SweepContext
    from study.store import Store

CONTROLLER_PATIENCE_S = 300  # how long --wait tolerates an unreachable controller (a restart, a failover)
JOBS_FILE = "slurm/jobs.json"


# --- what is kept in the store --------------------------------------------------------------------------

@contextmanager
def _jobs_lock(store: "Store") -> Iterator[Path]:
    path = store.root / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def read_jobs(store: "Store") -> list[dict[str, Any]]:
    """Every submission made for this store: job id, when, and the cell ids of each array task."""
    path = store.root / JOBS_FILE
    try:
        return json.loads(path.read_text())["jobs"]
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, KeyError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); move it away to forget the recorded Slurm jobs") from None


def _add_job(store: "Store", entry: dict[str, Any]) -> None:
    from study.store import atomic_write

    with _jobs_lock(store) as path:
        jobs = read_jobs(store) + [entry]
        atomic_write(path, json.dumps({"jobs": jobs}, indent=1).encode())


def _task_cells(jobs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Slurm task id (``12_3``, or ``12`` when submitit sent a one-task array as a plain job) -> its cells."""
    return {tid: cells for j in jobs
            for tid, cells in zip(j.get("task_ids") or [f"{j['job_id']}_{i}" for i in range(len(j["tasks"]))],
                                  j["tasks"])}


def _break_dead_claims(store: "Store", cell_ids: list[str]) -> int:
    """Remove claims held by Slurm tasks that no longer run (cancelled, or killed on another node).

    A claim by a dead process counts as stale only on its own host; without this a task killed on node A
    would lock its cell for the claim's time-to-live against a resubmission that lands on node B. The claim's
    owner names the task's own ``SLURM_JOB_ID`` (``host:pid:slurm<id>_<index>``).
    """
    claims = {c: store.read_claim(c) for c in cell_ids}
    slurm_owned = {c: cl for c, cl in claims.items() if cl is not None and ":slurm" in cl.owner}
    if not slurm_owned:
        return 0
    live = live_job_ids()
    broken = 0
    for cell_id, claim in slurm_owned.items():
        if claim.owner.rsplit(":slurm", 1)[1].split("_")[0] not in live:
            store.break_claim(cell_id)
            broken += 1
    return broken


# --- the submitting side --------------------------------------------------------------------------------

def executor_parameters(spec: "ExecutorSpec", name: str, n_tasks: int) -> dict[str, Any]:
    """submitit parameters from the sweep's ``executor:`` block; GPU keys only when GPUs are asked."""
    params: dict[str, Any] = {
        "name": f"ms-{name}",
        "timeout_min": spec.time_min,
        "mem_gb": spec.mem_gb,
        "cpus_per_task": spec.cpus_per_task,
        "slurm_array_parallelism": min(spec.array_parallelism, n_tasks),
    }
    if spec.partition:
        params["slurm_partition"] = spec.partition
    if spec.gpus_per_task:
        params["gpus_per_node"] = spec.gpus_per_task  # one task per node: per node = per task
    if spec.sbatch_extra:
        params["slurm_additional_parameters"] = dict(spec.sbatch_extra)
    return params


def chunk_cells(cells: list["Cell"], per_task: int) -> list[list[str]]:
    """Chunks of at most ``per_task`` cells, never mixing bases: a task then loads one base's evaluator."""
    chunks: list[list[str]] = []
    by_base: dict[str, list[str]] = {}
    for cell in cells:
        by_base.setdefault(cell.base, []).append(cell.cell_id)
    for ids in by_base.values():
        chunks += [ids[i:i + per_task] for i in range(0, len(ids), per_task)]
    return chunks


class SlurmExecutor:
    """Submits the cells a sweep still needs as one job array; with ``wait`` follows it to the end."""

    poll_s = 3.0

    def run(self, ctx: "SweepContext", store: "Store", *, retry_failed: bool = False, wait: bool = True) -> RunSummary:
        from study.executors.pool import plugin_modules

        summary = RunSummary()
        todo, held, running_jobs = self._cells_to_submit(ctx, store, retry_failed, summary)
        if todo:
            self._submit_cells(ctx, store, todo, retry_failed, summary, plugin_modules())
        elif held:
            print(f"slurm: nothing new to submit; job(s) {' '.join(running_jobs)} still hold {len(held)} cell(s)",
                  flush=True)
        else:
            print("slurm: nothing to submit", flush=True)
        if wait and (todo or held):
            summary.claimed_elsewhere = 0  # followed to the end below, and counted by outcome
            follow(ctx, store, summary.submitted + running_jobs, [c.cell_id for c in todo] + held, summary)
        return summary

    def _submit_cells(self, ctx: "SweepContext", store: "Store", todo: list["Cell"], retry_failed: bool,
                      summary: RunSummary, plugins: list[str]) -> None:
        spec = ctx.sweep.executor
        if spec.gpus_per_task and partition_gpus(spec.partition) < spec.gpus_per_task:
            where = f"partition {spec.partition!r}" if spec.partition else "the default partition"
            raise UserError(f"executor.gpus_per_task = {spec.gpus_per_task} but {where} has fewer GPUs per node "
                            f"(sinfo): choose a GPU partition or set gpus_per_task: 0")
        chunks = chunk_cells(todo, spec.cells_per_task)
        task_spec = TaskSpec(
            sweep=ctx.sweep, source=str(ctx.source.resolve()) if ctx.source else None,
            cwd=os.getcwd(), zoo_root=str(Path(ctx.zoo_root).resolve()) if ctx.zoo_root else None,
            device=ctx.device, gpus=spec.gpus_per_task, store_root=str(store.root.resolve()),
            retry_failed=retry_failed, plugins=tuple(plugins))
        job_id = self._submit(ctx, store, chunks, task_spec)
        summary.submitted.append(job_id)
        print(f"slurm: submitted job array {job_id}: {len(chunks)} task(s) for {len(todo)} cell(s); logs in "
              f"{store.root / 'slurm' / 'logs'}", flush=True)

    def _cells_to_submit(self, ctx: "SweepContext", store: "Store", retry_failed: bool,
                         summary: RunSummary) -> tuple[list["Cell"], list[str], list[str]]:
        """(cells to submit, cell ids held by live tasks of earlier submissions, those jobs' ids).

        Not-applicable cells are recorded here, at once: they need no model, so no array task.
        """
        from study.record import Outcome
        from study.runner import run_cells

        candidates, not_applicable = [], []
        for cell in ctx.plan.unique_cells():
            status = store.status(cell.cell_id)
            if status == Outcome.DONE:
                summary.add(Outcome.CACHED)
            elif status == Outcome.NOT_APPLICABLE:
                summary.add(Outcome.NOT_APPLICABLE)
            elif status == Outcome.FAILED and not retry_failed:
                summary.add(Outcome.FAILED)
            elif cell.not_applicable:
                not_applicable.append(cell)
            else:
                candidates.append(cell)
        if not_applicable:
            for outcome, n in run_cells(ctx, store, not_applicable).items():
                summary.add(outcome, n)
        if not candidates:
            return [], [], []
        jobs = read_jobs(store)
        active = queue_states([j["job_id"] for j in jobs])
        active_jobs = {tid.split("_")[0] for tid in active}
        held = {c for tid, cells in _task_cells(jobs).items() if tid in active for c in cells}
        todo = [c for c in candidates if c.cell_id not in held]
        held_ids = [c.cell_id for c in candidates if c.cell_id in held]
        summary.add("claimed_elsewhere", len(held_ids))
        _break_dead_claims(store, [c.cell_id for c in todo])
        return todo, held_ids, sorted(active_jobs, key=int)

    def _submit(self, ctx: "SweepContext", store: "Store", chunks: list[list[str]], task_spec: TaskSpec) -> str:
        import submitit

        logs = store.root / "slurm" / "logs"
        executor = submitit.AutoExecutor(folder=logs, cluster="slurm")
        executor.update_parameters(**executor_parameters(ctx.sweep.executor, ctx.sweep.name, len(chunks)))
        try:
            jobs = executor.map_array(CellsTask(task_spec), chunks)
        except submitit.core.utils.FailedJobError as exc:
            lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()] or str(exc).splitlines() or [""]
            where = f" (executor: block of {ctx.source})" if ctx.source else ""
            raise UserError(f"Slurm refused the job array for sweep {ctx.sweep.name}: {lines[-1].strip()}; "
                            f"check the resources asked{where}") from None
        job_id = jobs[0].job_id.split("_")[0]
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        _add_job(store, {"job_id": job_id, "submitted": now, "sweep": ctx.sweep.name,
                         "sweep_hash": ctx.plan.sweep_hash, "logs": str(logs),
                         "task_ids": [j.job_id for j in jobs], "tasks": chunks})
        return job_id


# --- following, status, cancel --------------------------------------------------------------------------

def follow(ctx: "SweepContext", store: "Store", job_ids: list[str], cells: list[str], summary: RunSummary) -> None:
    """Show progress on ``cells`` until no task of ``job_ids`` is queued or running; count outcomes from the store.

    Interrupting this (Ctrl-C) stops following, not the jobs.
    """
    from study.executors.local import progress_bar
    from study.record import Outcome

    jobs = [j for j in read_jobs(store) if j["job_id"] in job_ids]
    tasks = _task_cells(jobs)
    left = set(cells)
    final: dict[str, str] = {}
    interrupted = False
    with progress_bar(transient=False) as bar:
        bar_task = bar.add_task(f"{ctx.sweep.name} (slurm {','.join(job_ids)})", total=len(cells), cell="")
        try:
            _poll_until_done(store, job_ids, len(cells), left, final, lambda **kw: bar.update(bar_task, **kw))
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        print(f"slurm: stopped following; job(s) {' '.join(job_ids)} keep running: see `merge-study status`, "
              f"stop them with `merge-study cancel`", flush=True)
    for status in final.values():
        summary.add(Outcome.COMPUTED if status == Outcome.DONE else status)
    if left and not interrupted:
        _report_unfinished(store, jobs, tasks, left)


def _poll_until_done(store: "Store", job_ids: list[str], total: int, left: set[str], final: dict[str, str],
                     show: Any) -> None:
    """Move cells from ``left`` to ``final`` as records appear, until Slurm lists no task of ``job_ids``."""
    from study.record import RECORD_STATUSES

    unreachable_since: float | None = None
    while True:
        active: dict[str, str] = {}
        try:
            active = queue_states(job_ids)
            unreachable_since = None
        except UserError as exc:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > CONTROLLER_PATIENCE_S:
                raise UserError(f"lost the Slurm controller while following jobs {', '.join(job_ids)}: {exc}; "
                                f"the jobs may still run: see `merge-study status`") from None
        for cid in list(left):
            status = store.status(cid)
            if status in RECORD_STATUSES:
                final[cid] = status
                left.discard(cid)
        counts: dict[str, int] = {}
        for state in active.values():
            counts[state.lower()] = counts.get(state.lower(), 0) + 1
        show(completed=total - len(left), cell=", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        if not active and unreachable_since is None:
            return
        time.sleep(SlurmExecutor.poll_s)


def _report_unfinished(store: "Store", jobs: list[dict[str, Any]], tasks: dict[str, list[str]],
                       left: set[str]) -> None:
    """Say which tasks ended without finishing their cells, how (sacct), and which log to read."""
    states = _settled_states([j["job_id"] for j in jobs], list(tasks))
    for tid, ids in tasks.items():
        missing = [c for c in ids if c in left]
        if missing:
            job = next(j for j in jobs if tid.startswith(j["job_id"] + "_"))
            log = Path(job["logs"]) / f"{tid}_0_log"
            print(f"slurm: task {tid} ended {states.get(tid, 'without an accounting record')} with "
                  f"{len(missing)} cell(s) unfinished; read {log}.out and .err", flush=True)
    print(f"slurm: {len(left)} cell(s) not finished: `merge-study run` again submits them", flush=True)


def _settled_states(job_ids: list[str], task_ids: list[str], timeout_s: float = 15.0) -> dict[str, str]:
    """sacct lags the controller by seconds (docs/architecture.md, "Slurm facts"): poll briefly until no task looks active."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = accounting_states(job_ids)
        if time.monotonic() > deadline or not any(states.get(t, "PENDING") in ACTIVE for t in task_ids):
            return states
        time.sleep(1.0)


def slurm_states(store: "Store") -> dict[str, int]:
    """Array tasks of this store's submissions counted by state (``merge-study status``)."""
    jobs = read_jobs(store)
    if not jobs:
        return {}
    try:
        states = task_states([j["job_id"] for j in jobs])
    except UserError as exc:  # status still answers from the store
        print(f"warning: cannot ask Slurm about jobs {', '.join(j['job_id'] for j in jobs)}: {exc}", file=sys.stderr)
        return {"UNREACHABLE": sum(len(j["tasks"]) for j in jobs)}
    counts: dict[str, int] = {}
    for tid in _task_cells(jobs):
        state = states.get(tid, "UNKNOWN")
        counts[state] = counts.get(state, 0) + 1
    return counts


def cancel_jobs(store: "Store", timeout_s: float = 60.0) -> list[str]:
    """scancel every queued or running job of this store, wait until they are gone, free their claims."""
    jobs = read_jobs(store)
    active = queue_states([j["job_id"] for j in jobs])
    ids = sorted({tid.split("_")[0] for tid in active}, key=int)
    if not ids:
        return []
    slurm("scancel", *ids)
    deadline = time.monotonic() + timeout_s
    while queue_states(ids):
        if time.monotonic() > deadline:
            raise UserError(f"jobs {' '.join(ids)} are still listed by squeue {timeout_s:.0f} s after scancel: "
                            f"check `squeue -j {','.join(ids)}`")
        time.sleep(1.0)
    _break_dead_claims(store, [c for cells in _task_cells(jobs).values() for c in cells])
    return ids
