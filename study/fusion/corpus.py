"""The fusion corpus: the texts teachers are run on and the target is trained on, never an evaluated document.

It is a calibration set of ``study.statistics`` (a sweep's ``study.config.CorpusSpec`` is a ``CalibrationSpec``
field for field: the zoo's training mixture, an lm-eval task's train or validation split, or a text file) read
through ``calibration_texts``, which refuses an lm-eval task's evaluated split and any zoo text that is a
held-out evaluated document. A fusion cell trains weights on
these texts, so the check is stricter here: every text is also checked against the prompts of the documents the
sweep itself evaluates (``check_not_evaluated``, given the evaluator's tasks), whatever the source. The corpus
enters cell keys by ``corpus_key`` (a file by its content digest) and teacher caches by ``corpus_digest`` (the
texts themselves).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from study.errors import MethodError
from study.statistics.spec import CalibrationSpec

MIN_PROMPT_CHARS = 8
"""Evaluated prompts shorter than this are not searched for inside corpus texts (``Q: 1\\nA:`` would match
unrelated text); they still refuse a text that starts with them."""


def calibration(spec: Any) -> CalibrationSpec:
    """A sweep's ``CorpusSpec`` (``study.config``) as the calibration spec whose code reads and checks it."""
    return spec if isinstance(spec, CalibrationSpec) else CalibrationSpec(**spec.model_dump())


def corpus_key(spec: Any) -> dict[str, Any]:
    """The corpus as it enters a cell key: the spec, a text file by its content digest instead of its path."""
    from study.statistics.calibration import calibration_key

    return calibration_key(calibration(spec))


def corpus_texts(spec: Any) -> list[str]:
    """The corpus's texts, checked by the calibration rules (never an evaluated split or held-out document)."""
    from study.statistics.calibration import calibration_texts

    return calibration_texts(calibration(spec))


def corpus_digest(texts: list[str], max_tokens: int) -> str:
    return hashlib.sha256(json.dumps({"texts": texts, "max_tokens": max_tokens}).encode()).hexdigest()


def evaluated_prompts(task_dict: dict[str, Any]) -> set[str]:
    """The prompt of every document the evaluator scores (lm-eval's ``doc_to_text`` of its evaluated split)."""
    from lm_eval.api.task import Task

    prompts: set[str] = set()
    stack = list(task_dict.values())
    while stack:
        task = stack.pop()
        if isinstance(task, dict):
            stack.extend(task.values())
            continue
        if not isinstance(task, Task):
            continue
        docs: Iterable[Any] = task.eval_docs
        prompts.update(str(task.doc_to_text(d)) for d in docs)
    return {p for p in prompts if p}


def check_not_evaluated(texts: list[str], prompts: set[str], allowed: set[str] | None = None) -> None:
    """Refuse a text that starts with an evaluated prompt, or contains one of ``MIN_PROMPT_CHARS`` or more.

    ``allowed`` are prompts the source may contain by design (the zoo's small-table skills ask the facts
    their training text teaches, ``study.statistics.calibration``); they are not searched for.
    """
    search = prompts - (allowed or set())
    long = {p for p in search if len(p) >= MIN_PROMPT_CHARS}
    for text in texts:
        for p in search:
            if text.startswith(p) or (p in long and p in text):
                raise MethodError(f"fusion corpus: text {text[:60]!r} contains the evaluated document {p[:60]!r}; "
                                  f"a fusion cell must never train on the test set: choose another corpus")


def allowed_prompts(spec: Any) -> set[str]:
    """Evaluated prompts a source contains by design: for ``zoo``, the small-table skills' questions (their
    evaluation asks every fact, and the base's mixture teaches half of them; ``study.zoo.skills``)."""
    if spec.source != "zoo":
        return set()
    from study.zoo.skills import SKILLS, prompt
    from study.zoo.tasks import TASKS, documents

    return {prompt(d["question"]) for t in TASKS.values() if not SKILLS[t.skill].heldout for d in documents(t)}
