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
PREFIXES = {"char": PREFIX, "bpe": "zoo-bpe:"}
"""How each zoo family's models are spelled (``study.zoo.family``): ``zoo:add`` is the character zoo's expert,
``zoo-bpe:add`` the bpe family's. Tasks are the same for every family and keep ``zoo:``."""
ALL = "all"
"""The task name that stands for every task of the zoo (``zoo:all``)."""


def bare(name: str, prefix: str = PREFIX) -> str:
    """``name`` without the ``zoo:`` (or another family's) prefix."""
    return name[len(prefix):] if name.startswith(prefix) else name


def split_model_ref(reference: str) -> tuple[str, str] | None:
    """(family, model name) of a zoo model reference (``zoo-bpe:add`` -> ``("bpe", "add")``); None for a
    reference that names no zoo family (a directory or a hub id)."""
    for family, prefix in PREFIXES.items():
        if reference.startswith(prefix):
            return family, reference[len(prefix):]
    return None


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


def model_name(name: str, known: list[str], prefix: str = PREFIX) -> str:
    """The model ``name`` spells (``zoo:add`` -> ``add``; ``prefix`` is the family's) when ``known`` has it; a
    ``UserError`` with a hint otherwise."""
    spelled = bare(name, prefix)
    if spelled in known:
        return spelled
    hints = {t.name: prefix + t.skill for t in TASKS.values() if t.skill in known} | {m: prefix + m for m in known}
    raise unknown("model", prefix + spelled, hints, [prefix + m for m in known], prefix)


def unknown(kind: str, name: str, hints: dict[str, str], known: list[str], prefix: str = PREFIX) -> UserError:
    """One line: the unknown name, the canonical spelling it most likely meant, and every known name.

    ``hints`` maps spellings (without ``zoo:``) to the canonical reference they stand for; an exact hit (a
    name of the other kind) wins over a merely similar one.
    """
    spelled = bare(name, prefix)
    close = [spelled] if spelled in hints else difflib.get_close_matches(spelled, list(hints), n=1)
    hint = f"did you mean {hints[close[0]]!r}? " if close else ""
    return UserError(f"unknown zoo {kind} {name!r}: {hint}known: {', '.join(known)}")
