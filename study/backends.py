"""Evaluation backends by name (the sweep's ``evaluation.backend``): ``hf`` in memory, ``vllm`` on a resident engine.

Each name points at an evaluator class, ``cls(model_dir, spec, tasks, *, trust_remote_code, ...)`` with an
``evaluate(state_dict)`` method (and ``evaluate_ensemble(state_dicts)`` where it does not hand the evaluator to
``study.ensemble``); it is imported only when a sweep evaluates with it (lm-eval, vLLM).
"""

from __future__ import annotations

from typing import Any

from study.registry import Registry

BACKENDS: Registry[Any] = Registry("evaluation backend", {
    "hf": "study.evaluate:Evaluator",
    "vllm": "study.evaluate_vllm:VllmEvaluator",
})


def get_backend(name: str) -> Any:
    """The evaluator class of backend ``name`` (a ``UserError`` naming the choices when it is unknown)."""
    return BACKENDS.get(name)
