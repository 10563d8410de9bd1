"""The job side of the Slurm executor: what one array task runs, in a process of its own on a compute node.

A task re-plans the sweep from the pickled ``TaskSpec`` and runs its chunk of cells through the store's claims,
so it is idempotent. On preemption or the time limit submitit calls ``checkpoint``: the task is requeued with
only the cells it had not finished, and the claim of the interrupted cell is released so that a task restarted
on another node is not locked out of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.config import Sweep
    from study.plan import Cell


@dataclass(frozen=True)
class TaskSpec:
    """Everything an array task needs to run its cells, independent of the submitting process."""

    sweep: "Sweep"
    source: str | None
    cwd: str
    zoo_root: str | None
    device: str
    gpus: int
    store_root: str
    retry_failed: bool
    plugins: tuple[str, ...] = ()


def job_device(requested: str, gpus: int) -> str:
    """``cuda`` when the task was given a GPU (or the sweep asks for one) and torch sees it, else ``cpu``.

    Falls back to CPU instead of failing: a GPU partition whose node lost its driver, or the local test
    cluster's fake GPUs, still finishes the cells (slower), and the task log says so.
    """
    if not (requested.startswith("cuda") or gpus > 0):
        return requested
    import torch

    if torch.cuda.is_available():
        return requested if requested.startswith("cuda") else "cuda"
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} but torch sees no CUDA device: "
          f"running on CPU", flush=True)
    return "cpu"


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # the executor is unavailable; the job-side class must still be importable for status
    _Checkpointable = object  # type: ignore[assignment,misc]


class CellsTask(_Checkpointable):
    """One array task: run a chunk of cells; on preemption or time-out, requeue with the unfinished ones."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.current: str | None = None
        self.finished: list[str] = []

    def __call__(self, cell_ids: list[str]) -> dict[str, Any]:
        from study.methods.registry import register_module
        from study.prepare import prepare
        from study.runner import run_cells
        from study.store import Store

        spec = self.spec
        os.chdir(spec.cwd)
        for module in spec.plugins:
            register_module(module)
        device = job_device(spec.device, spec.gpus)
        ctx = prepare(spec.sweep, zoo_root=Path(spec.zoo_root) if spec.zoo_root else None, device=device,
                      check_compat=False)
        ctx.source = Path(spec.source) if spec.source else None
        by_id = ctx.plan.by_id()
        cells = [by_id[c] for c in cell_ids if c in by_id]
        if len(cells) < len(cell_ids):
            print(f"{len(cell_ids) - len(cells)} cell(s) of this task are no longer in the sweep's plan (a "
                  f"checkpoint changed since submission): skipped; `merge-study run` plans them anew", flush=True)
        task = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
                if "SLURM_ARRAY_JOB_ID" in os.environ else os.environ.get("SLURM_JOB_ID", "?"))
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        print(f"task {task}: {len(cells)} cell(s), device {device}, CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES')}, restarts {restarts}", flush=True)

        def started(cell: "Cell") -> None:
            self.current = cell.cell_id
            print(f"start  {cell.cell_id}  {cell.describe()}", flush=True)

        def ended(cell: "Cell", outcome: str) -> None:
            self.current = None
            self.finished.append(cell.cell_id)
            print(f"{outcome:<6} {cell.cell_id}  {cell.describe()}", flush=True)

        counts = run_cells(ctx, Store(spec.store_root), cells, retry_failed=spec.retry_failed,
                           on_start=started, on_cell=ended)
        return {"counts": counts, "device": device, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "restarts": int(restarts)}

    def checkpoint(self, cell_ids: list[str]) -> Any:
        """Called by submitit on USR2 (preemption or the time limit): requeue with what is left."""
        from submitit.helpers import DelayedSubmission
        from study.store import Store

        if self.current is not None:
            Store(self.spec.store_root).release(self.current)
        left = [c for c in cell_ids if c not in set(self.finished)]
        print(f"interrupted (preempted or near the time limit) with {len(left)} cell(s) left: requeueing", flush=True)
        return DelayedSubmission(CellsTask(self.spec), left)
