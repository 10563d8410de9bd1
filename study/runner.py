"""Running cells of a prepared sweep (``study.prepare``): merge → evaluate → record, cell by cell.

``CellRunner`` keeps one ``Evaluator`` per base for the life of the process, so a cell costs a merge and an
evaluation, not a model load. A cell that raises is recorded as failed with its error and traceback and the
sweep goes on; only a full disk or an interrupt stops it.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from study.errors import NotApplicable
from study.gcpolicy import warm_up
from study.plan import BASE, ENSEMBLE, FUSION, FUSION_PREFIX, SINGLE, Cell
from study.prepare import SweepContext
from study.record import VALIDATION, Outcome, Record, Timing, mark_split, now
from study.store import StoreFullError, Store, worker_id


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
        from study.sources import open_source
        from study.tensors import CachedSource, TensorCache

        key = str(path)
        if key not in self.sources:
            if self.cache is None:
                self.cache = TensorCache()
            self.sources[key] = CachedSource(open_source(path, base), self.cache)
        return self.sources[key]

    def evaluator(self, base_name: str) -> Any:
        if base_name not in self.evaluators:
            from study.backends import get_backend
            from study.evaluate import resolve_tasks

            base = self.ctx.base_model(base_name)
            spec = self.ctx.sweep.evaluation
            tasks = resolve_tasks(spec.tasks, self.ctx.zoo_root) + [v.spec for v in self.validation]
            device = {} if spec.backend == "vllm" else {"device": self._eval_device()}  # vLLM places the model itself
            self.evaluators[base_name] = get_backend(spec.backend)(base.path, spec, tasks,
                                                                   trust_remote_code=base.ref.trust_remote_code, **device)
        return self.evaluators[base_name]

    @functools.cached_property
    def validation(self) -> list[Any]:
        """The sweep's validation tasks (``study.validation``; none without ``selection``), scored in the same
        lm-eval call as the test tasks, so a cell merges once."""
        from study.validation import validation_tasks

        return validation_tasks(self.ctx.sweep, self.ctx.zoo_root, self.ctx.zoo)

    def _eval_device(self) -> str:
        import torch

        return "cuda" if self.ctx.device.startswith("cuda") and torch.cuda.is_available() else "cpu"

    def checkpoint_weights(self, cell: Cell, label: str) -> dict[str, Any]:
        """One checkpoint's full state dict (a LoRA adapter materialised over the base)."""
        src = self.source(self.ctx.models[label].path, self.source(self.ctx.base_model(cell.base).path))
        return _finite({n: src.get(n) for n in src.names()}, src.path)

    def weights(self, cell: Cell, observe: Any = None) -> dict[str, Any]:
        """The state dict a cell evaluates: the base, one checkpoint, or a merge (streamed, in memory; ``observe``
        sees each merged tensor with its inputs, ``study.merge.iter_merge``)."""
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
        if self.store is not None:  # data-dependent statistics: computed once per sweep, beside its records
            inputs.statistics_dir = self.store.root / "statistics"
        return merge_state_dict(inputs, info, params, observe=observe)

    def diagnostics(self, cell: Cell) -> Any:
        """An accumulator of the merge's interference diagnostics (``study.diagnostics``), or None: not a merge
        cell, or ``diagnostics: false`` in the sweep. They never change a score, so they are not in the cell key."""
        if cell.kind != "merge" or not self.ctx.sweep.diagnostics:
            return None
        from study.diagnostics import DiagnosticsAccumulator

        return DiagnosticsAccumulator(len(cell.checkpoints))

    def merge_provenance(self, cell: Cell) -> dict[str, Any]:
        """What a merge cell's record keeps so that ``merge-study export`` re-materialises the same tensors:
        the device it merged on (not in the cell key, but floating-point results may differ between devices),
        the vocabulary rule, the method's version and the identity of every input."""
        if cell.kind != "merge":
            return {}
        from study.methods.registry import get_method

        base = next(b for b in self.ctx.sweep.bases if b.name == cell.base).model.label
        return {"device": self.ctx.device, "vocab_mismatch": self.ctx.sweep.merge.vocab_mismatch,
                "method_version": get_method(cell.method).version,
                "identities": {label: self.ctx.models[label].identity for label in (base, *cell.checkpoints)}}

    def fusion(self, cell: Cell) -> tuple[dict[str, Any], Any]:
        """A fusion cell's trained weights and cost (``study.fusion.cell``): the subset's checkpoints teach the
        target on the corpus; teachers' distributions are cached under the store's ``fusion/teachers`` (shared by
        every cell naming the teacher) and training checkpoints under ``fusion/train``, so a killed cell resumes
        its training where the last checkpoint left it."""
        from study.fusion.cell import Teacher, fuse_and_train
        from study.fusion.corpus import evaluated_prompts
        from study.fusion.registry import get_fusion_method
        from study.statistics.cache import statistics_dir
        from study.statistics.compute import load_model
        from study.statistics.spec import CalibrationSpec

        info = get_fusion_method(cell.method.removeprefix(FUSION_PREFIX))
        given = dict(cell.resolved_params)
        target, corpus = given.pop("target"), CalibrationSpec.model_validate(given.pop("corpus"))
        base = self.ctx.base_model(cell.base)
        device = self._fusion_device()
        tokenizers: dict[str, Any] = {}

        def loader(label: str | None) -> Any:
            src = None if label is None else self.source(self.ctx.models[label].path, self.source(base.path))
            return lambda: load_model(base.path, src, device)

        def tokenizer() -> Any:  # teachers of one base share its tokenizer, as they do in a merge
            if "base" not in tokenizers:
                from transformers import AutoTokenizer

                tokenizers["base"] = AutoTokenizer.from_pretrained(str(base.path))
            return tokenizers["base"]

        teachers = [Teacher(self.ctx.models[label].identity, loader(label), tokenizer) for label in cell.checkpoints]
        root = (self.store.root if self.store is not None else statistics_dir().parent) / "fusion"
        evaluator = self.evaluator(cell.base)
        task_dict = getattr(evaluator, "task_dict", None)
        return fuse_and_train(info, info.resolve_params(given), corpus, teachers,
                              loader(None if target == BASE else target), cache_dir=root / "teachers", device=device,
                              evaluated=evaluated_prompts(task_dict) if task_dict else None,
                              checkpoint=root / "train" / f"{cell.cell_id}.pt")

    def _fusion_device(self) -> str:
        """Where a fusion cell runs: the sweep's ``merge.device``; CUDA asked for and absent is an error, not a
        silent CPU run (training takes minutes there, and its weights differ from a CUDA run's)."""
        import torch

        from study.errors import UserError

        if self.ctx.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"merge.device is {self.ctx.device} but this machine has no CUDA device: a fusion cell "
                            f"trains where the sweep says; run it on a GPU node or set merge.device: cpu")
        return self.ctx.device

    def compute(self, cell: Cell) -> tuple[Record, list[dict[str, Any]] | None, dict[str, bytes] | None]:
        """Merge and evaluate one cell; returns its record, samples and lm-eval files (``study.lm_eval_files``).
        Never raises for a cell's own failure."""
        started, worker = now(), worker_id()
        t0 = time.perf_counter()
        try:
            if cell.not_applicable:
                raise NotApplicable(cell.not_applicable)
            summary = fusion_cost = None
            if cell.method == ENSEMBLE:
                from study.ensemble import evaluate_ensemble

                states = [self.checkpoint_weights(cell, label) for label in cell.checkpoints]
                t1 = time.perf_counter()
                evaluator = self.evaluator(cell.base)
                own = getattr(evaluator, "evaluate_ensemble", None)  # a backend that scores ensembles its own way
                result = own(states) if own else evaluate_ensemble(evaluator, states)
            elif cell.kind == FUSION:
                state, fusion_cost = self.fusion(cell)
                t1 = time.perf_counter()
                result = self.evaluator(cell.base).evaluate(state)
            else:
                diagnostics = self.diagnostics(cell)
                state = self.weights(cell, observe=diagnostics)
                summary = diagnostics.result() if diagnostics is not None else None  # part of the merge's time
                t1 = time.perf_counter()
                result = self.evaluator(cell.base).evaluate(state)
            t2 = time.perf_counter()
            files = None
            if result.lm_eval is not None:
                from study.lm_eval_files import render_files

                files = render_files(result.lm_eval, cell, self.ctx.sweep.evaluation)
        except NotApplicable as exc:
            return (Record.new(cell, Outcome.NOT_APPLICABLE, worker=worker, started=started, reason=str(exc)),
                    None, None)
        except (KeyboardInterrupt, StoreFullError):
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            return Record.new(cell, Outcome.FAILED, worker=worker, started=started,
                              error=f"{type(exc).__name__}: {first}", traceback=traceback.format_exc(),
                              timing=Timing(total_s=time.perf_counter() - t0)), None, None
        scores = mark_split(result.scores, {v.name for v in self.validation}, VALIDATION)
        return (Record.new(cell, Outcome.DONE, worker=worker, started=started, scores=scores,
                           backend=result.backend, timing=Timing(merge_s=t1 - t0, eval_s=t2 - t1, total_s=t2 - t0),
                           merge=self.merge_provenance(cell), diagnostics=summary, fusion=fusion_cost),
                result.samples, files)

    def run_one(self, cell: Cell, *, retry_failed: bool = False) -> Outcome:
        """Compute a cell unless it is done (or failed, without ``retry_failed``) or claimed by a live worker.

        Returns ``computed``, ``cached``, ``failed``, ``not_applicable`` or ``claimed_elsewhere``.
        """
        status = self.store.status(cell.cell_id)
        if status == Outcome.DONE:
            return Outcome.CACHED
        if status == Outcome.NOT_APPLICABLE or (status == Outcome.FAILED and not retry_failed):
            return status
        if not self.store.claim(cell.cell_id):
            return Outcome.CLAIMED_ELSEWHERE
        try:
            status = self.store.status(cell.cell_id)  # another worker may have finished it before our claim
            if status == Outcome.DONE or (status == Outcome.FAILED and not retry_failed):
                return Outcome.CACHED if status == Outcome.DONE else Outcome.FAILED
            with _Heartbeat(self.store, cell.cell_id), (nullcontext() if cell.not_applicable else warm_up()):
                record, samples, files = self.compute(cell)
            self.store.put(record, samples, files)
        finally:
            self.store.release(cell.cell_id)
        return Outcome.COMPUTED if record.status == Outcome.DONE else record.status


def _finite(state: dict[str, Any], where: Path) -> dict[str, Any]:
    """A base or single cell evaluates a model as it is; a NaN or Inf in it fails the cell, as in a merge
    (``MergeInputs.load_raw``), instead of recording scores of a broken model as done."""
    from study.errors import MergeInputError
    from study.tensors import all_finite

    for name, t in state.items():
        if not all_finite(t):
            raise MergeInputError(f"tensor {name} of {where} has non-finite values (NaN or Inf)")
    return state


def run_cells(ctx: SweepContext, store: Store, cells: list[Cell], *, retry_failed: bool = False,
              on_cell: Callable[[Cell, Outcome], None] | None = None, on_start: Callable[[Cell], None] | None = None,
              runner: CellRunner | None = None) -> dict[Outcome, int]:
    """Run ``cells`` in order in this process; counts per outcome. Used by every executor's workers."""
    runner = runner or CellRunner(ctx, store)
    counts: dict[Outcome, int] = {}
    for cell in cells:
        if on_start:
            on_start(cell)
        outcome = runner.run_one(cell, retry_failed=retry_failed)
        counts[outcome] = counts.get(outcome, 0) + 1
        if on_cell:
            on_cell(cell, outcome)
    return counts
