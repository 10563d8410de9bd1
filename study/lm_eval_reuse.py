"""Work that lm-eval redoes on every ``evaluate`` call although it depends only on the tasks and the tokenizer.

A sweep calls ``lm_eval.evaluator.evaluate`` once per cell on the same task objects and the same model wrapper
with new weights. Each call rebuilds every task's requests (``Task.build_all_requests``: the documents
iterated, every prompt rendered through its Jinja templates, few-shot examples drawn) and tokenises every
prompt again (``tok_encode``), though neither depends on the weights. On the mini zoo (9 tasks x 20 docs,
cProfile of a 19-cell ``merge-study run``) that was ~0.75 s of request building and ~0.4 s of tokenising per
cell, against ~2 s of model forward passes.

So the first call builds and tokenises as lm-eval does, and later calls reuse the results:

- requests: a task's instances are kept, without responses, after its first build; a later build with the
  same arguments and the same few-shot count and generation settings gets fresh copies of them (empty
  ``resps`` and ``filtered_resps``, which lm-eval fills in). ``run_lm_eval`` reseeds the few-shot sampler
  before every call, so a rebuild would draw exactly the same prompts: the reuse changes no request.
- tokens: ``tok_encode`` of the model wrapper is memoised on its arguments (a string, or a batch of strings
  as lm-eval's vLLM model passes them); each call gets its own copy of the token lists, so a caller that
  edits one cannot change what the next cell sees. Tokenising is a pure function of the tokenizer, which
  the wrapper keeps for its life.

Both are installed on the objects themselves (idempotent), so every backend gets them through
``run_lm_eval``; the scores are those of lm-eval's own path (``tests/test_lm_eval_reuse.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

_MARK = "_merge_study_reuse"


def reuse_requests(task_dict: dict[str, Any]) -> None:
    """Make every leaf task of ``task_dict`` (``TaskManager.load``'s result) build its requests once."""
    for task in (task_dict.get("tasks") or {}).values():
        if not getattr(task, _MARK, False) and hasattr(task, "build_all_requests"):
            task.build_all_requests = _RequestMemo(task, task.build_all_requests)
            setattr(task, _MARK, True)


def reuse_tokens(lm: Any) -> None:
    """Memoise ``lm.tok_encode`` (lm-eval's ``TemplateLM`` and its HF and vLLM models have one)."""
    encode = getattr(lm, "tok_encode", None)
    if encode is None or getattr(lm, _MARK, False):
        return
    lm.tok_encode = _TokenMemo(encode)
    setattr(lm, _MARK, True)


def _fresh(instance: Any) -> Any:
    """A copy of a request as ``construct_requests`` made it: no responses yet."""
    return dataclasses.replace(instance, resps=[], filtered_resps={})


class _RequestMemo:
    """``Task.build_all_requests`` that keeps its first result per set of arguments."""

    def __init__(self, task: Any, build: Callable[..., None]):
        self.task = task
        self.build = build
        self.kept: dict[Any, list[Any]] = {}

    def _key(self, kwargs: dict[str, Any]) -> Any:
        config = self.task.config
        args = tuple(sorted((k, _hashable(v) if k != "chat_template" else v is not None) for k, v in kwargs.items()))
        return args, repr(config.num_fewshot), repr(getattr(config, "generation_kwargs", None))

    def __call__(self, **kwargs: Any) -> None:
        key = self._key(kwargs)
        if key not in self.kept:
            self.build(**kwargs)
            self.kept[key] = [_fresh(i) for i in self.task.instances]
            return
        self.task._instances = [_fresh(i) for i in self.kept[key]]


class _TokenMemo:
    """``tok_encode`` memoised on hashable arguments; anything else goes straight through."""

    def __init__(self, encode: Callable[..., Any]):
        self.encode = encode
        self.kept: dict[Any, Any] = {}

    def __call__(self, string: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            key = (_hashable(string), args, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            return self.encode(string, *args, **kwargs)
        if key not in self.kept:
            self.kept[key] = self.encode(string, *args, **kwargs)
        return _copy(self.kept[key])


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def _copy(tokens: Any) -> Any:
    """Token lists (or lists of them) copied so no two callers share one."""
    if isinstance(tokens, list):
        return [_copy(t) if isinstance(t, list) else t for t in tokens]
    return tokens
