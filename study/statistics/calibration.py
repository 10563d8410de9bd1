"""The calibration texts a statistic is computed on, and the check that none of them is an evaluated document.

Statistics that are fitted on the documents a sweep scores would leak the test set into the merge, so every
source is checked: an lm-eval task's evaluated split (its test split, else its validation split) is refused, and
a text whose prompt is one of the evaluated documents' prompts is an error naming it. For ``zoo`` the evaluated
documents are those of the held-out skills (their questions are never trained on); the small-table skills are
knowledge tasks whose evaluation asks the trained facts by design (``study.zoo.skills``), so training text
necessarily contains them, as it did for the experts themselves.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from study.errors import MethodError
from study.statistics.spec import CalibrationSpec

ZOO_SEED = "aim-calibration"
"""The zoo draw's seed: AIM's since version 1, so AIM's calibration set (and scores) stay what they were."""


def calibration_key(spec: CalibrationSpec) -> dict[str, Any]:
    """The spec as it enters a cache key: a file by its content digest (editing it recomputes), not its path."""
    data = spec.model_dump()
    if spec.source == "file" and spec.path:
        data["path"] = "sha256:" + hashlib.sha256(Path(spec.path).read_bytes()).hexdigest()
    return data


def calibration_texts(spec: CalibrationSpec) -> list[str]:
    """The first ``spec.sequences`` calibration texts, checked against the evaluated documents."""
    if spec.source == "zoo":
        texts = _zoo_texts(spec.sequences)
        _check_disjoint(texts, _zoo_evaluated_prompts(), "zoo")
        return texts
    if spec.source == "file":
        path = Path(spec.path or "")
        if not path.is_file():
            raise MethodError(f"calibration: {path} is not a text file")
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise MethodError(f"calibration: {path} has no non-empty line")
        return lines[: spec.sequences]
    return _lm_eval_texts(spec)


def _zoo_texts(n: int) -> list[str]:
    """``n`` sequences of the mixture the zoo's base trained on (its skill weights, its step-by-step share,
    the half of each table it saw), from a seeded generator: prompt and answer, as the models were trained."""
    from study.zoo.skills import mixture, rng
    from study.zoo.spec import BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT

    draw, r = mixture(BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT), rng(ZOO_SEED)
    return ["".join(draw(r)) for _ in range(n)]


@lru_cache(maxsize=1)
def _zoo_evaluated_prompts() -> frozenset[str]:
    from study.zoo.skills import SKILLS, prompt
    from study.zoo.tasks import TASKS, documents

    return frozenset(prompt(d["question"]) for t in TASKS.values() if SKILLS[t.skill].heldout for d in documents(t))


def _check_disjoint(texts: list[str], evaluated: frozenset[str], where: str) -> None:
    """No text may start with an evaluated document's prompt (a zoo text is that prompt plus its answer)."""
    for text in texts:
        if any(text.startswith(p) for p in evaluated):
            raise MethodError(f"calibration {where}: text {text[:60]!r} is an evaluated document; "
                              f"statistics must not see the test set")


def _lm_eval_texts(spec: CalibrationSpec) -> list[str]:
    """Prompt, delimiter and gold target of the task's train (else validation) documents."""
    task = _build_task(spec.task or "")
    split = spec.split or ("train" if task.has_training_docs() else "validation")
    evaluated = "test" if task.has_test_docs() else "validation"
    if split == evaluated:
        raise MethodError(f"calibration lm_eval:{spec.task}: the {split} split is the one the task evaluates; "
                          f"use its train split (or validation, when it evaluates test)")
    has = task.has_training_docs() if split == "train" else task.has_validation_docs()
    if not has:
        raise MethodError(f"calibration lm_eval:{spec.task}: the task has no {split} split")
    docs = list(task.training_docs() if split == "train" else task.validation_docs())
    texts = [_doc_text(task, d) for d in docs[: spec.sequences]]
    eval_docs = task.test_docs() if evaluated == "test" else task.validation_docs()
    prompts = {str(task.doc_to_text(d)) for d in eval_docs}
    for doc, text in zip(docs, texts):
        if str(task.doc_to_text(doc)) in prompts:
            raise MethodError(f"calibration lm_eval:{spec.task}: {split} document {text[:60]!r} is also an "
                              f"evaluated document; statistics must not see the test set")
    return texts


def _build_task(name: str) -> Any:
    from lm_eval.tasks import TaskManager

    from study.errors import UserError
    from study.evaluate import resolve_tasks

    specs = resolve_tasks([name])
    try:
        loaded = TaskManager(include_defaults=any(not isinstance(s, dict) for s in specs)).load(specs)
    except Exception as exc:
        raise UserError(f"calibration lm_eval:{name}: lm-eval cannot build the task: {exc}") from None
    tasks = list(loaded["tasks"].values())
    if len(tasks) != 1:
        raise MethodError(f"calibration lm_eval:{name}: names {len(tasks)} tasks; name one")
    return tasks[0]


def _doc_text(task: Any, doc: dict[str, Any]) -> str:
    prompt = str(task.doc_to_text(doc))
    target = task.doc_to_target(doc)
    if task.config.output_type == "multiple_choice":
        choices = task.doc_to_choice(doc)
        target = choices[target] if isinstance(target, int) else target
    elif isinstance(target, list):
        target = target[0] if target else ""
    return f"{prompt}{task.config.target_delimiter}{target}"
