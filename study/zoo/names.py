"""One vocabulary for the mini zoo: ``zoo:add`` names both the expert fine-tuned on skill ``add`` and the task
that measures that skill.

A task is also accepted under the name lm-eval reports and every table prints (``zoo_add``), bare or as
``zoo:zoo_add``; a model only as ``zoo:NAME`` (``base`` or an expert). A name that is close to a known one, or
right for the other kind (``zoo:zoo_add`` as a model, ``zoo:add_steps`` as a task), gets the canonical
spelling as a hint. Plain Python: checking a name needs neither a built zoo nor torch.
"""

from __future__ import annotations

import difflib

from study.errors import UserError
from study.zoo.spec import EXPERTS
from study.zoo.tasks import TASKS

PREFIX = "zoo:"
ALL = "all"
"""The task name that stands for every task of the zoo (``zoo:all``)."""


def bare(name: str) -> str:
    """``name`` without the ``zoo:`` prefix."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def is_zoo_task(name: str) -> bool:
    """Whether a task list entry refers to the zoo: ``zoo:...``, or a zoo task's lm-eval name (``zoo_add``)."""
    return name.startswith(PREFIX) or name in TASKS


def canonical_task(task: str) -> str:
    """How a task is written in sweeps and hints: ``zoo:`` and the skill it measures (``zoo_add`` -> ``zoo:add``)."""
    return PREFIX + TASKS[task].skill


def task_spellings() -> dict[str, str]:
    """Every accepted spelling of a task, without ``zoo:``, mapped to the task's lm-eval name."""
    return {**{t.skill: t.name for t in TASKS.values()}, **{t.name: t.name for t in TASKS.values()}}


def task_name(name: str) -> str:
    """The lm-eval name of the task ``name`` spells, or ``all``; a ``UserError`` with a hint otherwise."""
    spelled = bare(name)
    if spelled == ALL:
        return ALL
    if spelled in task_spellings():
        return task_spellings()[spelled]
    hints = {expert: PREFIX + skill for expert, (skill, _) in EXPERTS.items()}
    hints |= {s: canonical_task(t) for s, t in task_spellings().items()} | {ALL: PREFIX + ALL}
    raise unknown("task", name, hints, [PREFIX + ALL, *(canonical_task(t) for t in TASKS)])


def model_name(name: str, known: list[str]) -> str:
    """The model ``name`` spells (``zoo:add`` -> ``add``) when ``known`` has it; a ``UserError`` with a hint
    otherwise."""
    spelled = bare(name)
    if spelled in known:
        return spelled
    hints = {t.name: PREFIX + t.skill for t in TASKS.values() if t.skill in known} | {m: PREFIX + m for m in known}
    raise unknown("model", PREFIX + spelled, hints, [PREFIX + m for m in known])


def unknown(kind: str, name: str, hints: dict[str, str], known: list[str]) -> UserError:
    """One line: the unknown name, the canonical spelling it most likely meant, and every known name.

    ``hints`` maps spellings (without ``zoo:``) to the canonical reference they stand for; an exact hit (a
    name of the other kind) wins over a merely similar one.
    """
    spelled = bare(name)
    close = [spelled] if spelled in hints else difflib.get_close_matches(spelled, list(hints), n=1)
    hint = f"did you mean {hints[close[0]]!r}? " if close else ""
    return UserError(f"unknown zoo {kind} {name!r}: {hint}known: {', '.join(known)}")
