"""Weights & Biases logging of a sweep: one run per store, a row per finished cell, the report's table and figures.

Why it is built this way:

* Optional. ``wandb`` is imported only when logging is on (``logging: {wandb: {...}}`` in the sweep, or
  ``--wandb``); a sweep without it never imports it, and asking for it without the ``wandb`` extra is a one-line
  error before anything is written.
* One run per sweep. The run's id is kept in the store (``wandb.json``), so a resumed ``run``, a second
  executor on the same store and ``report`` all log into that run (``wandb.init(id=..., resume="allow")``).
  Offline, every process writes its own ``offline-run-<time>-<id>`` directory; ``wandb sync`` uploads the
  directories of one id in order of start time into the one run.
* Rows come from the store, not from the executors: a watcher thread reads the record of each cell that finished
  since it last looked (every ``POLL_S`` seconds, and once more at the end), so local, pool and Slurm ``--wait``
  runs are logged alike with no hook in any executor, and cells finished while nothing was logging (a Slurm
  array after ``run`` returned) are logged by the next ``run`` or ``report``. Which cells were logged, and the
  next step, are kept in ``wandb.json``: an offline run that resumes counts its steps from 0 again, and the
  parts of one run must not reuse a step when they are synced.
* Never a reason for a sweep to fail: an exception raised by wandb is printed once as a warning and logging
  stops; the cells, the store and the report go on. Results live in the store; W&B only shows them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from statistics import fmean
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

from study.config import Sweep, WandbSpec
from study.errors import UserError
from study.plan import Cell, Plan
from study.record import Outcome, Record

STATE_FILE = "wandb.json"
POLL_S = 10.0
INSTALL = "pip install 'merge-study[wandb]'"


class RunState(BaseModel):
    """What ``wandb.json`` in a store keeps: the run the sweep logs to, how to reach it, and how far it got."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    spec: WandbSpec
    logged: list[str] = Field(default_factory=list, description="cell ids whose row was logged, in order")
    next_step: int = Field(default=0, ge=0, description="the W&B step the next row is logged at")

    @classmethod
    def load(cls, store: Any) -> "RunState | None":
        raw = store.read_meta(STATE_FILE)
        if raw is None:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValueError:
            _warn(f"{store.root / STATE_FILE} is unreadable; a new W&B run is started")
            return None

    def save(self, store: Any) -> None:
        store.write_meta(STATE_FILE, (self.model_dump_json(indent=1) + "\n").encode())


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def wandb_installed() -> bool:
    """Whether ``wandb`` can be imported, found without importing it (its import takes seconds)."""
    try:
        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        return False


def require_wandb() -> None:
    """The one-line error for logging asked without the extra (before the store is touched)."""
    if not wandb_installed():
        raise UserError(f"W&B logging is on but wandb is not installed: {INSTALL}, or run without --wandb "
                        f"and without logging.wandb in the sweep")


def wandb_settings(sweep: Sweep, enable: bool | None = None, project: str | None = None) -> WandbSpec | None:
    """The W&B settings of a ``run``: the sweep's ``logging.wandb``, switched on by ``--wandb`` (or
    ``--wandb-project``, which also names the project) and off by ``--no-wandb``; None when off."""
    spec = sweep.logging.wandb
    if enable is False:
        return None
    if spec is None and not enable and project is None:
        return None
    spec = spec or WandbSpec()
    if project is not None:
        spec = spec.model_copy(update={"project": project})
    require_wandb()
    return spec


def report_settings(sweep: Sweep, store: Any, enable: bool | None = None) -> WandbSpec | None:
    """The W&B settings of a ``report``: the sweep file's ``logging.wandb``, else those of the run the store
    logs to (``wandb.json``; a stored plan keeps no logging), else ``--wandb``'s defaults; None when off. Only
    an explicit ``--wandb`` makes a missing wandb an error: a report of a logged store on a machine without
    wandb is written, with a warning that it was not logged."""
    if enable is False:
        return None
    state = RunState.load(store)
    spec = sweep.logging.wandb or (state.spec if state is not None else None)
    if spec is None and not enable:
        return None
    if enable:
        require_wandb()
    elif not wandb_installed():
        _warn(f"this store logs to a W&B run but wandb is not installed: the report is not logged ({INSTALL})")
        return None
    return spec or WandbSpec()


def benchmark_scores(record: Record) -> dict[str, float]:
    """Each benchmark's primary score (a task, or a top-level group's own aggregate; not a group's leaves), as
    avg(cell) counts them (``study.analysis.measures.cell_averages``)."""
    return {task: float(e["score"]) for task, e in record.scores.items() if e.get("benchmark", task) == task}


def cell_row(cell: Cell, record: Record | None) -> dict[str, Any]:
    """One cell as W&B shows it: what it is, how it ended, each benchmark's score and their mean (``avg``)."""
    row: dict[str, Any] = {"key": cell.cell_id, "base": cell.base, "method": cell.method,
                           "label": cell.method_label or cell.method, "params": cell.params_key, "k": cell.k,
                           "subset": cell.subset_id, "checkpoints": json.dumps(list(cell.checkpoints)),
                           "outcome": str(Outcome.PENDING if record is None else record.status)}
    if record is None:
        return row
    scores = benchmark_scores(record) if record.status == Outcome.DONE else {}
    row.update({f"score/{task}": value for task, value in scores.items()})
    if scores:
        row["avg"] = fmean(scores.values())
    if record.message:
        row["error"] = record.message
    if record.timing.total_s is not None:
        row["seconds"] = record.timing.total_s
    return row


def cells_table_rows(plan: Plan, records: dict[str, Record | None]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the table of every unique cell (pending ones too), scores one column per benchmark."""
    rows = [cell_row(cell, records.get(cell.cell_id)) for cell in plan.unique_cells()]
    fixed = ["key", "base", "method", "label", "params", "k", "subset", "checkpoints", "outcome", "avg"]
    scores = list(dict.fromkeys(c for r in rows for c in r if c.startswith("score/")))
    columns = [*fixed, *scores, "error", "seconds"]
    return columns, [[r.get(c) for c in columns] for r in rows]


class Tracker:
    """An open W&B run of one store. Every method is a no-op once wandb has failed (warned once)."""

    def __init__(self, store: Any, state: RunState, run: Any = None):
        self.store, self.state, self.run, self.failed = store, state, run, False
        self._lock = threading.Lock()

    @classmethod
    def open(cls, spec: WandbSpec, store: Any, sweep: Sweep, config: dict[str, Any]) -> "Tracker":
        """The store's run (a new one when it has none, or one of another project or entity), initialised."""
        state = RunState.load(store)
        same = state is not None and (state.spec.project, state.spec.entity) == (spec.project, spec.entity)
        tracker = cls(store, RunState(run_id=state.run_id if same else secrets.token_hex(4), spec=spec,
                                      logged=state.logged if same else [], next_step=state.next_step if same else 0))
        tracker._call(tracker._init, sweep, config)
        return tracker

    def _init(self, sweep: Sweep, config: dict[str, Any]) -> None:
        import wandb

        spec = self.state.spec
        where = {} if os.environ.get("WANDB_DIR") else {"dir": str(self.store.root)}
        self.run = wandb.init(project=spec.project, entity=spec.entity, name=spec.name or sweep.name,
                              group=spec.group, tags=list(spec.tags) or None, id=self.state.run_id, resume="allow",
                              mode=spec.mode or os.environ.get("WANDB_MODE") or "offline", config=config,
                              settings=wandb.Settings(console="off", silent=True), **where)
        self.state.save(self.store)

    def _call(self, fn: Any, *args: Any) -> Any:
        if self.failed:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # wandb's own failures (service, disk, network): the sweep goes on
            self.failed = True
            first = (str(exc).strip().splitlines() or [""])[0]
            _warn(f"W&B logging stopped ({type(exc).__name__}: {first}); the sweep goes on and its results are in "
                  f"the store")
            return None

    def _step(self) -> int:
        return max(self.state.next_step, getattr(self.run, "step", 0) or 0)

    def log_new_cells(self, plan: Plan) -> int:
        """Log a row for every unique cell that has a record and no row yet; how many were logged."""
        with self._lock:
            return self._call(self._log_new_cells, plan) or 0

    def _log_new_cells(self, plan: Plan) -> int:
        done = set(self.state.logged)
        n = 0
        for cell in plan.unique_cells():
            if cell.cell_id in done:
                continue
            record = self.store.get(cell.cell_id)
            if record is None:
                continue
            step = self._step()
            self.run.log({f"cell/{k}": v for k, v in cell_row(cell, record).items()}, step=step)
            self.state.logged.append(cell.cell_id)
            self.state.next_step = step + 1
            n += 1
        if n:
            self.state.save(self.store)
        return n

    def log_cells_table(self, plan: Plan) -> None:
        """The table of every unique cell as the store holds it now (``cells``)."""
        with self._lock:
            self._call(self._log_cells_table, plan)

    def _log_cells_table(self, plan: Plan) -> None:
        import wandb

        columns, rows = cells_table_rows(plan, {c: self.store.get(c) for c in plan.by_id()})
        self._log_at_next_step({"cells": wandb.Table(columns=columns, data=rows, allow_mixed_types=True)})

    def log_report(self, out_dir: Path, written: list[Path]) -> None:
        """``summary.csv`` as a table and every PNG figure of the report as an image, at one step."""
        with self._lock:
            self._call(self._log_report, out_dir, written)

    def _log_report(self, out_dir: Path, written: list[Path]) -> None:
        import pandas as pd
        import wandb

        from study.analysis.report import FIGURES

        captions = dict(FIGURES)
        data: dict[str, Any] = {}
        summary = out_dir / "summary.csv"
        if summary.is_file():
            data["report/summary"] = wandb.Table(dataframe=pd.read_csv(summary), allow_mixed_types=True)
        for path in written:
            if path.suffix == ".png":
                data[f"report/figure/{path.stem}"] = wandb.Image(str(path), caption=captions.get(path.stem, path.stem))
        if data:
            self._log_at_next_step(data)
        self.run.summary["report/out"] = str(out_dir.resolve())

    def _log_at_next_step(self, data: dict[str, Any]) -> None:
        step = self._step()
        self.run.log(data, step=step)
        self.state.next_step = step + 1
        self.state.save(self.store)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run and say where it is: its page online, or the directory ``wandb sync`` uploads."""
        with self._lock:
            self._call(self._finish, exit_code)

    def _finish(self, exit_code: int) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        offline = run.settings.mode == "offline"
        where = Path(run.dir).parent if offline else None
        run.finish(exit_code=exit_code)
        if offline:
            print(f"W&B: offline run {self.state.run_id} in {where}; upload it (every part of a resumed run) with "
                  f"`wandb sync {where.parent}/offline-run-*-{self.state.run_id}`", file=sys.stderr, flush=True)
        elif run.url:
            print(f"W&B: {run.url}", file=sys.stderr, flush=True)


def _config(sweep: Sweep, store: Any, plan: Plan) -> dict[str, Any]:
    return {"sweep": sweep.model_dump(mode="json"), "sweep_hash": plan.sweep_hash, "store": str(Path(store.root).resolve()),
            "cells": len(plan.unique_cells())}


class _Watcher:
    """Logs newly finished cells every ``every_s`` seconds in a daemon thread, until stopped."""

    def __init__(self, tracker: Tracker, plan: Plan, every_s: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(tracker, plan, every_s), daemon=True,
                                        name="merge-study-wandb")

    def _watch(self, tracker: Tracker, plan: Plan, every_s: float) -> None:
        while not self._stop.wait(every_s) and not tracker.failed:
            tracker.log_new_cells(plan)

    def __enter__(self) -> "_Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def sweep_tracking(spec: WandbSpec | None, ctx: Any, store: Any, every_s: float = POLL_S) -> Iterator[None]:
    """Log the cells that finish inside the ``with`` block (and any finished earlier without a row), then the
    table of all cells, into the store's W&B run; nothing at all when ``spec`` is None."""
    if spec is None:
        yield
        return
    tracker = Tracker.open(spec, store, ctx.sweep, _config(ctx.sweep, store, ctx.plan))
    code = 1
    try:
        with _Watcher(tracker, ctx.plan, every_s):
            yield
        code = 0
    finally:
        tracker.log_new_cells(ctx.plan)
        tracker.log_cells_table(ctx.plan)
        tracker.finish(code)


def log_report(spec: WandbSpec | None, ctx: Any, store: Any, out_dir: Path, written: list[Path]) -> None:
    """Log a written report into the store's W&B run: rows of cells finished since the last log, the table of
    all cells, ``summary.csv`` and the figures. Nothing when ``spec`` is None."""
    if spec is None:
        return
    tracker = Tracker.open(spec, store, ctx.sweep, _config(ctx.sweep, store, ctx.plan))
    tracker.log_new_cells(ctx.plan)
    tracker.log_cells_table(ctx.plan)
    tracker.log_report(Path(out_dir), written)
    tracker.finish()
