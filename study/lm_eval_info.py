"""What ``lm_eval.simple_evaluate`` adds to ``evaluate``'s results (run config, environment, tokenizer), so that
the results of an in-memory evaluation are those the lm-eval CLI writes (``study.lm_eval_files`` writes them)."""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def _collect_environment() -> dict[str, Any]:
    from lm_eval.loggers.utils import add_env_info, get_git_commit_hash

    info: dict[str, Any] = {"git_hash": get_git_commit_hash()}
    add_env_info(info)
    return info


@functools.cache
def prefetch_environment() -> Future:
    """Start asking for the environment in a background thread, once per process.

    torch's environment report runs subprocesses (``pip list``, ``lscpu``, ``nvidia-smi``...): 1-4 s on a quiet
    machine, over 20 s on a loaded one, almost all of it waiting on them. Evaluators call this when they are
    built, so the wait overlaps loading the model and building the tasks instead of delaying the first cell.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lm-eval-env")
    future = pool.submit(_collect_environment)
    pool.shutdown(wait=False)
    return future


def _environment() -> dict[str, Any]:
    """What ``simple_evaluate`` records about the environment; asked once per process."""
    return prefetch_environment().result()


def _model_info(lm: Any) -> dict[str, Any]:
    """``HFLM.get_model_info`` without its hub lookup (a merged model has no hub id to ask about)."""
    model = getattr(lm, "_model", None)
    if model is None or not hasattr(model, "parameters"):
        return {}
    return {"model_num_parameters": sum(p.numel() for p in model.parameters()),
            "model_dtype": str(getattr(model, "dtype", "")), "model_revision": None, "model_sha": ""}


def add_run_info(results: dict[str, Any], lm: Any, spec: Any, started: float) -> None:
    """Complete ``evaluate``'s results as ``simple_evaluate`` does: the run's config (the model named later, by
    ``render_files``), git hash, start time, environment and tokenizer; plus the backend and chat template
    that lm-eval's tracker writes."""
    from lm_eval.loggers.utils import add_tokenizer_info

    results["config"] = {
        "model": None, "model_args": None, **_model_info(lm),
        "batch_size": spec.batch_size,
        "batch_sizes": list(lm.batch_sizes.values()) if hasattr(lm, "batch_sizes") else [],
        "device": str(getattr(lm, "device", "")) or None, "use_cache": None, "limit": spec.limit,
        "bootstrap_iters": spec.bootstrap_iters, "gen_kwargs": None, "random_seed": spec.seed,
        "numpy_seed": spec.seed, "torch_seed": spec.seed, "fewshot_seed": spec.seed,
    }
    results.update(_environment())
    results["date"] = started
    add_tokenizer_info(results, lm)
    results["model_source"] = spec.backend
    results["chat_template"] = lm.chat_template(spec.apply_chat_template) if spec.apply_chat_template else None
