"""Running cells: prepare a sweep once per process, then merge → evaluate → record, cell by cell.

``prepare`` does every early check (schema, methods and parameters, checkpoint paths and compatibility,
tasks) before any model is loaded. ``CellRunner`` keeps one ``Evaluator`` per base for the life of the
process, so a cell costs a merge and an evaluation, not a model load. A cell that raises is recorded as failed
with its error and traceback and the sweep goes on; only a full disk or an interrupt stops it.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from study import RESULT_SCHEMA_VERSION, __version__
from study.checkpoints import ResolvedModel, resolve_model
from study.config import Sweep, load_sweep
from study.errors import NotApplicable, UserError
from study.gcpolicy import warm_up
from study.plan import BASE, ENSEMBLE, SINGLE, Cell, Plan, build_plan
from study.store import DONE, FAILED, NOT_APPLICABLE, StoreFullError, Store, worker_id

COMPUTED, CACHED, CLAIMED = "computed", "cached", "claimed_elsewhere"


@dataclass
class SweepContext:
    """A validated sweep with its models resolved and its plan built: all a worker needs to run cells."""

    sweep: Sweep
    models: dict[str, ResolvedModel]
    plan: Plan
    source: Path | None = None
    zoo_root: Path | None = None
    device: str = "cpu"

    def base_model(self, base_name: str) -> ResolvedModel:
        spec = next(b for b in self.sweep.bases if b.name == base_name)
        return self.models[spec.model.label]


def resolve_models(sweep: Sweep, zoo_root: Path | None = None) -> dict[str, ResolvedModel]:
    models: dict[str, ResolvedModel] = {}
    for base in sweep.bases:
        for ref in [base.model, *base.checkpoints]:
            if ref.label not in models:
                models[ref.label] = resolve_model(ref, zoo_root)
    return models


def check_methods(sweep: Sweep) -> None:
    """Unknown names (with a suggestion) and out-of-schema parameters, at every k the sweep merges."""
    from study.methods.registry import check_name, get_method
    from study.config import resolve_value
    from study.errors import MethodError

    for i, method in enumerate(sweep.methods):
        try:
            check_name(method.name)
            info = get_method(method.name)
            for point in method.grid():
                for k in [k for k in sweep.ks if k >= 2] or [2]:
                    info.resolve_params({p: resolve_value(v, k) for p, v in point.items()}, n_models=k)
        except MethodError as exc:
            raise MethodError(f"methods[{i}]: {exc}") from None


def prepare(sweep: Sweep | str | Path, *, zoo_root: Path | None = None, device: str | None = None,
            check_compat: bool = True) -> SweepContext:
    """Every early check, then the plan. Loads no model; reads only configs and safetensors headers."""
    source = None
    if not isinstance(sweep, Sweep):
        source = Path(sweep)
        sweep = load_sweep(source)
    try:
        return _prepare(sweep, source, zoo_root, device, check_compat)
    except UserError as exc:
        if source is None or str(exc).startswith(str(source)):
            raise
        raise type(exc)(f"{source}: {exc}") from None


def _prepare(sweep: Sweep, source: Path | None, zoo_root: Path | None, device: str | None,
             check_compat: bool) -> SweepContext:
    check_methods(sweep)
    models = resolve_models(sweep, zoo_root)
    if check_compat:
        from study.compat import check_compatible

        for base in sweep.bases:
            check_compatible(models[base.model.label].path, [models[c.label].path for c in base.checkpoints],
                             vocab_mismatch=sweep.merge.vocab_mismatch)
    from study.evaluate import resolve_tasks

    resolve_tasks(sweep.evaluation.tasks, zoo_root)
    plan = build_plan(sweep, models)
    return SweepContext(sweep, models, plan, source, zoo_root, device or sweep.merge.device)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _Heartbeat:
    """Refreshes a claim every minute while a cell computes, so a long cell is not taken for a dead one."""

    def __init__(self, store: Store, cell_id: str, every_s: float = 60.0):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, cell_id, every_s), daemon=True)

    def _beat(self, store: Store, cell_id: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            store.refresh_claim(cell_id)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


@dataclass
class CellRunner:
    """Runs cells of one sweep in this process, reusing evaluators across cells."""

    ctx: SweepContext
    store: Store
    evaluators: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    cache: Any = None

    def source(self, path: Path, base: Any = None) -> Any:
        """An open tensor source per model directory for the life of the runner, read through the cache."""
        from study.tensors import CachedSource, TensorCache, open_source

        key = str(path)
        if key not in self.sources:
            if self.cache is None:
                self.cache = TensorCache()
            self.sources[key] = CachedSource(open_source(path, base), self.cache)
        return self.sources[key]

    def evaluator(self, base_name: str) -> Any:
        if base_name not in self.evaluators:
            from study.evaluate import Evaluator, resolve_tasks

            base = self.ctx.base_model(base_name)
            spec = self.ctx.sweep.evaluation
            tasks = resolve_tasks(spec.tasks, self.ctx.zoo_root)
            if spec.backend == "vllm":
                from study.evaluate_vllm import VllmEvaluator

                self.evaluators[base_name] = VllmEvaluator(base.path, spec, tasks,
                                                           trust_remote_code=base.ref.trust_remote_code)
            else:
                self.evaluators[base_name] = Evaluator(base.path, spec, tasks, device=self._eval_device(),
                                                       trust_remote_code=base.ref.trust_remote_code)
        return self.evaluators[base_name]

    def _eval_device(self) -> str:
        import torch

        return "cuda" if self.ctx.device.startswith("cuda") and torch.cuda.is_available() else "cpu"

    def checkpoint_weights(self, cell: Cell, label: str) -> dict[str, Any]:
        """One checkpoint's full state dict (a LoRA adapter materialised over the base)."""
        src = self.source(self.ctx.models[label].path, self.source(self.ctx.base_model(cell.base).path))
        return _finite({n: src.get(n) for n in src.names()}, src.path)

    def weights(self, cell: Cell) -> dict[str, Any]:
        """The state dict a cell evaluates: the base, one checkpoint, or a merge (streamed, in memory)."""
        from study.merge import merge_state_dict, open_inputs
        from study.methods.registry import get_method

        base = self.ctx.base_model(cell.base)
        ckpts = [self.ctx.models[label].path for label in cell.checkpoints]
        if cell.method == BASE:
            src = self.source(base.path)
            return _finite({n: src.get(n) for n in src.names()}, src.path)
        if cell.method == SINGLE:
            return self.checkpoint_weights(cell, cell.checkpoints[0])
        info = get_method(cell.method)
        params = info.resolve_params(cell.resolved_params, n_models=len(ckpts))
        inputs = open_inputs(base.path, ckpts, device=self.ctx.device, vocab_mismatch=self.ctx.sweep.merge.vocab_mismatch,
                             opener=self.source)
        return merge_state_dict(inputs, info, params)

    def compute(self, cell: Cell) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """Merge and evaluate one cell; returns its record and samples. Never raises for a cell's own failure."""
        record: dict[str, Any] = {"schema": RESULT_SCHEMA_VERSION, "cell_id": cell.cell_id, "cell": cell.to_json(),
                                  "worker": worker_id(), "host": platform.node(), "started": _now(),
                                  "harness_version": __version__}
        t0 = time.perf_counter()
        try:
            if cell.not_applicable:
                raise NotApplicable(cell.not_applicable)
            if cell.method == ENSEMBLE:
                from study.ensemble import evaluate_ensemble

                states = [self.checkpoint_weights(cell, label) for label in cell.checkpoints]
                t1 = time.perf_counter()
                result = evaluate_ensemble(self.evaluator(cell.base), states)
            else:
                state = self.weights(cell)
                t1 = time.perf_counter()
                result = self.evaluator(cell.base).evaluate(state)
            t2 = time.perf_counter()
        except NotApplicable as exc:
            return {**record, "status": NOT_APPLICABLE, "reason": str(exc), "finished": _now()}, None
        except (KeyboardInterrupt, StoreFullError):
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            return {**record, "status": FAILED, "error": f"{type(exc).__name__}: {first}",
                    "traceback": traceback.format_exc(), "finished": _now(),
                    "timing": {"total_s": time.perf_counter() - t0}}, None
        return {**record, "status": DONE, "scores": result.scores, "finished": _now(),
                "timing": {"merge_s": t1 - t0, "eval_s": t2 - t1, "total_s": t2 - t0}}, result.samples

    def run_one(self, cell: Cell, *, retry_failed: bool = False) -> str:
        """Compute a cell unless it is done (or failed, without ``retry_failed``) or claimed by a live worker.

        Returns ``computed``, ``cached``, ``failed``, ``not_applicable`` or ``claimed_elsewhere``.
        """
        status = self.store.status(cell.cell_id)
        if status == DONE:
            return CACHED
        if status in (FAILED, NOT_APPLICABLE) and not (retry_failed and status == FAILED):
            return status
        if not self.store.claim(cell.cell_id):
            return CLAIMED
        try:
            status = self.store.status(cell.cell_id)  # another worker may have finished it before our claim
            if status == DONE or (status == FAILED and not retry_failed):
                return CACHED if status == DONE else FAILED
            with _Heartbeat(self.store, cell.cell_id), (nullcontext() if cell.not_applicable else warm_up()):
                record, samples = self.compute(cell)
            self.store.put(record, samples)
        finally:
            self.store.release(cell.cell_id)
        return COMPUTED if record["status"] == DONE else record["status"]


def _finite(state: dict[str, Any], where: Path) -> dict[str, Any]:
    """A base or single cell evaluates a model as it is; a NaN or Inf in it fails the cell, as in a merge
    (``MergeInputs.load_raw``), instead of recording scores of a broken model as done."""
    from study.errors import MergeInputError
    from study.tensors import all_finite

    for name, t in state.items():
        if not all_finite(t):
            raise MergeInputError(f"tensor {name} of {where} has non-finite values (NaN or Inf)")
    return state


def save_plan(ctx: SweepContext, store: Store) -> None:
    """Keep the plan and the sweep next to the records, for ``status`` and the report's provenance."""
    import yaml

    store.write_meta("plan.json", json.dumps({"sweep_hash": ctx.plan.sweep_hash, "name": ctx.sweep.name,
                                              "cells": [c.to_json() for c in ctx.plan.cells]}, indent=1).encode())
    store.write_meta("sweep.yaml", yaml.safe_dump(ctx.sweep.model_dump(mode="json"), sort_keys=False).encode())


def run_cells(ctx: SweepContext, store: Store, cells: list[Cell], *, retry_failed: bool = False,
              on_cell: Callable[[Cell, str], None] | None = None, on_start: Callable[[Cell], None] | None = None,
              runner: CellRunner | None = None) -> dict[str, int]:
    """Run ``cells`` in order in this process; counts per outcome. Used by every executor's workers."""
    runner = runner or CellRunner(ctx, store)
    counts: dict[str, int] = {}
    for cell in cells:
        if on_start:
            on_start(cell)
        outcome = runner.run_one(cell, retry_failed=retry_failed)
        counts[outcome] = counts.get(outcome, 0) + 1
        if on_cell:
            on_cell(cell, outcome)
    return counts
