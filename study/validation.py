"""The validation split of every task of a selection sweep (``selection:``, docs/study.md "Selection").

A selection sweep scores each cell on every benchmark of ``evaluation.tasks`` (test) and on one validation task
per benchmark, in the same lm-eval call: the merge is paid once, and the validation entries of the record are
marked ``split: validation`` (``study.record.VALIDATION``), so nothing that reads test scores sees them.

Where a benchmark's validation split comes from, in order:

1. ``selection.tasks`` names it (an lm-eval task or group name, or a task YAML file): the user's choice, for
   tasks whose validation data lives elsewhere, groups, and task files;
2. a zoo task: its own validation split (``study.zoo.validation``: the task's generator, disjoint from its
   test documents and from all training data);
3. an lm-eval task: the same task on lm-eval's ``validation_split`` (its ``TaskConfig`` field), evaluated as
   ``<task>__validation`` with ``test_split`` unset, so lm-eval scores ``validation_docs``. This is lm-eval's
   own notion of a task's validation data, needs no second task definition, and keeps prompt, metric and
   filters identical to the test task's by construction. A task with no ``validation_split``, or one lm-eval
   already scores on it (no ``test_split``: hellaswag), has no held-out validation split and is refused, as are
   groups, tags and task files without an entry in ``selection.tasks``.

Every refusal is one line (``UserError``, exit 2), raised by ``prepare`` before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.config import Sweep
from study.errors import UserError
from study.zoo.validation import SUFFIX


@dataclass(frozen=True)
class ValidationTask:
    """The validation split of one ``evaluation.tasks`` entry: ``name`` is the benchmark lm-eval reports it as
    (what the record keys it under), ``spec`` what lm-eval loads, ``identity`` what enters the cell key."""

    test: str
    name: str
    spec: Any
    identity: str


def validation_tasks(sweep: Sweep, zoo_root: Path | None = None, zoo: str | None = None) -> list[ValidationTask]:
    """One ``ValidationTask`` per entry of ``sweep.evaluation.tasks`` (none without ``selection``); ``zoo`` is
    the digest of the mini zoo the sweep uses. A ``UserError`` for a task with no validation split."""
    if sweep.selection is None:
        return []
    out: list[ValidationTask] = []
    for test in sweep.evaluation.tasks:
        mapped = sweep.selection.tasks.get(test)
        out += [_mapped(test, mapped, zoo_root, zoo)] if mapped is not None else _default(test, zoo_root, zoo)
    names = [v.name for v in out]
    clash = next((n for n in names if names.count(n) > 1 or n in _test_names(sweep, zoo_root)), None)
    if clash is not None:
        raise UserError(f"selection: validation task {clash!r} is named twice or is also a test task: give each "
                        f"benchmark its own validation task in selection.tasks")
    return out


def _test_names(sweep: Sweep, zoo_root: Path | None) -> set[str]:
    from study.zoo.names import is_zoo_task, task_name

    return {task_name(t) if is_zoo_task(t) else t for t in sweep.evaluation.tasks}


def _mapped(test: str, task: str, zoo_root: Path | None, zoo: str | None) -> ValidationTask:
    from study.evaluate import _task_name, resolve_tasks
    from study.zoo.names import is_zoo_task, task_name

    try:
        specs = resolve_tasks([task], zoo_root)
    except UserError as exc:
        raise UserError(f"selection.tasks.{test}: {str(exc).removeprefix('evaluation.tasks: ')}") from None
    if len(specs) != 1:
        raise UserError(f"selection.tasks.{test}: {task!r} names {len(specs)} tasks; name one task or group")
    identity = f"zoo:{task_name(task)}@{zoo}" if is_zoo_task(task) else task
    return ValidationTask(test, _task_name(specs[0]), specs[0], identity)


def _default(test: str, zoo_root: Path | None, zoo: str | None) -> list[ValidationTask]:
    from study.zoo.names import ALL, is_zoo_task, task_name

    if is_zoo_task(test):
        from study.zoo import load_zoo
        from study.zoo.tasks import TASKS

        name = task_name(test)
        return [_zoo(test, t, load_zoo(zoo_root).path, zoo) for t in (TASKS if name == ALL else [name])]
    if test.endswith((".yaml", ".yml")):
        raise UserError(f"selection: task file {test} has no validation split the harness derives: name its "
                        f"validation task or file in selection.tasks")
    return [_lm_eval(test)]


def _zoo(test: str, task: str, zoo_path: Path, zoo: str | None) -> ValidationTask:
    from study.zoo.validation import docs_digest, unavailable, validation_config

    why = unavailable(task)
    if why is not None:
        raise UserError(f"selection: zoo task {task} has no validation split: {why}; drop it from evaluation.tasks "
                        f"(zoo:first, zoo:last and zoo:max have one) or name one in selection.tasks")
    return ValidationTask(test, task + SUFFIX, validation_config(task, zoo_path),
                          f"zoo:{task}{SUFFIX}:{docs_digest(task)[:16]}@{zoo}")


def _lm_eval(test: str) -> ValidationTask:
    from lm_eval.tasks._yaml_loader import load_yaml

    from study.evaluate import _kind, _task_index

    entry = _task_index().get(test)
    kind = _kind(entry) if entry is not None else "unknown"
    if kind not in ("TASK",) or entry.yaml_path is None:
        what = {"GROUP": "a group", "TAG": "a tag", "PY_TASK": "a Python task"}.get(kind, "not a plain task")
        raise UserError(f"selection: {test} is {what}, whose validation split the harness does not derive: name "
                        f"its validation task or group in selection.tasks")
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    if not cfg.get("validation_split"):
        raise UserError(f"selection: lm-eval task {test} has no validation split (its TaskConfig names no "
                        f"validation_split): drop it, or name a validation task in selection.tasks")
    if not cfg.get("test_split"):
        raise UserError(f"selection: lm-eval task {test} has no test split and is already scored on its "
                        f"validation split {cfg['validation_split']!r}, so that split is not held out: drop it, or "
                        f"name a validation task in selection.tasks")
    spec = {**cfg, "task": test + SUFFIX, "test_split": None}
    return ValidationTask(test, test + SUFFIX, spec, f"{test}@{cfg['validation_split']}")
