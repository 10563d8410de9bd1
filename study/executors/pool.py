"""Worker processes on one machine: one per visible GPU, or N CPU slots.

Why processes and not threads: a merge and an evaluation hold the GIL for long stretches and CUDA memory is
only returned when a process ends. Each worker is started with ``spawn`` (never ``fork``: the parent may
already hold torch and CUDA state) and gets its own ``CUDA_VISIBLE_DEVICES`` before torch is imported, so a
worker sees exactly one GPU as ``cuda``. Cells come from one queue (so slow cells balance out), and every
worker still goes through the store's claims, so a pool can share a store with a Slurm array or a second pool.
A worker that dies (OOM kill, segfault) has its cell recorded as failed and is replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study.executors.base import RunSummary
from study.executors.local import progress_bar
from study.record import Outcome, Record

if TYPE_CHECKING:
    from study.prepare import SweepContext
    from study.store import Store

MAX_RESTARTS = 3  # per slot: a cell that kills its worker every time must not stall the pool forever


def visible_gpus() -> list[str]:
    """GPU ids this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs).

    ``CUDA_VISIBLE_DEVICES`` wins when set (an empty value means "no GPU", the usual way to force CPU);
    otherwise torch counts the devices (NVML based, so CUDA is not initialised in this process).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch or a broken driver: run on CPU
        return []


def plugin_modules() -> list[str]:
    """Modules registered with ``--plugin`` in this process: workers start empty and must import them again."""
    from study.methods.registry import registered_modules

    return registered_modules()


@dataclass(frozen=True)
class Slot:
    """One worker's place: its index, its GPU (None on CPU) and how many CPU threads torch may use."""

    index: int
    gpu: str | None
    threads: int


def plan_slots(workers: int | None, gpus: list[str], cpus: int | None = None) -> list[Slot]:
    """One slot per GPU (``workers`` may only lower that), else ``workers`` CPU slots sharing the cores."""
    cpus = cpus or os.cpu_count() or 1
    if gpus:
        n = min(workers or len(gpus), len(gpus))
        return [Slot(i, gpus[i], max(1, cpus // n)) for i in range(n)]
    n = workers or 1
    return [Slot(i, None, max(1, cpus // n)) for i in range(n)]


def _worker(slot: Slot, ctx: "SweepContext", store_root: str, retry_failed: bool, plugins: list[str],
            tasks: Any, results: Any) -> None:
    """Runs in the child: pin the device and threads first, then take cell ids until the ``None`` sentinel."""
    if slot.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    os.environ["OMP_NUM_THREADS"] = str(slot.threads)
    try:
        import torch

        torch.set_num_threads(slot.threads)
        if slot.gpu is not None:
            ctx.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif ctx.device.startswith("cuda"):
            ctx.device = "cpu"
        from study.methods.registry import register_module
        from study.runner import CellRunner
        from study.store import Store

        for module in plugins:
            register_module(module)
        runner = CellRunner(ctx, Store(store_root))
        cells = ctx.plan.by_id()
        while (cell_id := tasks.get()) is not None:
            results.put(("start", slot.index, cell_id))
            outcome = runner.run_one(cells[cell_id], retry_failed=retry_failed)
            results.put(("done", slot.index, cell_id, outcome))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # a full disk or a broken environment: stop the whole pool, say why
        results.put(("fatal", slot.index, f"{type(exc).__name__}: {exc}", traceback.format_exc()))


class PoolExecutor:
    """Runs a sweep's cells in worker processes on this machine and waits for them."""

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def run(self, ctx: "SweepContext", store: "Store", *, retry_failed: bool = False, wait: bool = True) -> RunSummary:
        slots = plan_slots(self.workers or ctx.sweep.executor.workers, visible_gpus())
        cells = ctx.plan.unique_cells()
        summary = RunSummary()
        if not cells:
            return summary
        where = ", ".join(f"GPU {s.gpu}" for s in slots) if slots[0].gpu is not None else f"{len(slots)} CPU slot(s)"
        print(f"pool: {len(slots)} worker(s) on {where}", flush=True)
        spawn = mp.get_context("spawn")
        tasks, results = spawn.Queue(), spawn.Queue()
        for cell in cells:
            tasks.put(cell.cell_id)
        for _ in slots:
            tasks.put(None)
        run = _PoolRun(spawn, ctx, store, retry_failed, tasks, results, summary)
        try:
            for slot in slots:
                run.start(slot)
            with progress_bar(transient=False) as bar:
                task = bar.add_task(ctx.sweep.name, total=len(cells), cell="")
                run.follow(len(cells), lambda: bar.advance(task),
                           lambda text: bar.update(task, cell=text))
                bar.update(task, cell="")
        finally:
            run.stop()
        return summary


class _PoolRun:
    """The parent's side of one pool run: start, watch and replace workers, collect outcomes."""

    def __init__(self, spawn: Any, ctx: "SweepContext", store: "Store", retry_failed: bool, tasks: Any,
                 results: Any, summary: RunSummary):
        self.spawn, self.ctx, self.store, self.retry_failed = spawn, ctx, store, retry_failed
        self.tasks, self.results, self.summary = tasks, results, summary
        self.procs: dict[int, Any] = {}
        self.slots: dict[int, Slot] = {}
        self.current: dict[int, str] = {}
        self.restarts: dict[int, int] = {}
        self.plugins = plugin_modules()

    def start(self, slot: Slot) -> None:
        proc = self.spawn.Process(target=_worker, name=f"merge-study-pool-{slot.index}", daemon=True,
                                  args=(slot, self.ctx, str(self.store.root), self.retry_failed, self.plugins,
                                        self.tasks, self.results))
        proc.start()
        self.procs[slot.index], self.slots[slot.index] = proc, slot

    def follow(self, total: int, advance: Any, show: Any) -> None:
        finished = 0
        by_id = self.ctx.plan.by_id()
        while finished < total:
            try:
                msg = self.results.get(timeout=1.0)
            except queue.Empty:
                finished += self._check_workers(advance)
                if not self.procs:
                    return  # every worker gone (restarts exhausted); the rest stays pending
                continue
            kind, index = msg[0], msg[1]
            if kind == "start":
                self.current[index] = msg[2]
                show(by_id[msg[2]].describe())
            elif kind == "done":
                self.current.pop(index, None)
                self.summary.add(msg[3])
                finished += 1
                advance()
            elif kind == "fatal":
                from study.errors import UserError

                if msg[2].startswith("StoreFullError"):
                    raise UserError(f"pool worker {index} stopped the run: {msg[2]}")
                raise RuntimeError(f"pool worker {index} failed outside any cell: {msg[2]}\n{msg[3]}")

    def _check_workers(self, advance: Any) -> int:
        """Record the cell of a worker that died as failed, and replace the worker; returns cells settled."""
        settled = 0
        for index, proc in list(self.procs.items()):
            if proc.is_alive():
                continue
            del self.procs[index]
            cell_id = self.current.pop(index, None)
            if proc.exitcode == 0 and cell_id is None:
                continue  # took its sentinel and finished
            if cell_id is not None:
                self._record_death(cell_id, index, proc.exitcode)
                self.summary.add(Outcome.FAILED)
                settled += 1
                advance()
            # the dead worker never took its sentinel, so its replacement finds one waiting
            self.restarts[index] = self.restarts.get(index, 0) + 1
            if self.restarts[index] <= MAX_RESTARTS:
                self.start(self.slots[index])
        return settled

    def _record_death(self, cell_id: str, index: int, exitcode: int | None) -> None:
        """A failed record like the runner's own, so ``status`` lists the cell and ``--retry-failed`` redoes it.

        The dead worker's claim needs no cleanup: a claim by a dead pid on this host counts as stale.
        """
        how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        error = (f"WorkerDied: pool worker {index} ended ({how}) while computing this cell, e.g. out of memory; "
                 f"run again with --retry-failed")
        cell = self.ctx.plan.by_id()[cell_id]
        self.store.put(Record.new(cell, Outcome.FAILED, worker=f"pool-{index}", error=error, traceback=error))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        self.procs.clear()
