"""The zoo tasks' validation splits: documents drawn from a task's own generator, disjoint from its test documents
and from everything the zoo trains on.

Why separate from ``tasks.py``: the zoo's build hash covers ``TASKS`` and every test document
(``spec.data_digest``), and a zoo task's identity is its name in a zoo of a given digest. Validation documents
are therefore not part of the build: they are generated here on demand, written beside the build
(``<zoo>/validation/<task>-<digest>.jsonl``, atomically, named by their content), and evaluated as their own
lm-eval task ``<task>__validation``. Test documents, the zoo's directory name and digest, and every existing
cell key stay as they were.

Disjointness, by construction:

- from training: a held-out skill reserves a digest-chosen ``HELDOUT_PERCENT`` of its question space for
  evaluation (``Skill.is_eval``), and ``Skill.train_fact`` never returns such a question, for the base or any
  expert. Validation takes only reserved questions;
- from test: it skips every question the test documents ask (``documents(spec)``).

A task whose skill has a small space (the tables: sums, differences, next letters, capitals, colours) has none:
its test documents ask every fact, and every fact is trained on, so nothing from its generator is disjoint
from both. Nor has ``zoo_count_mc``: its 107 reserved questions are all test documents. Those tasks have no
validation split (``unavailable`` says why), and a selection sweep naming them is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from study.zoo.skills import SKILLS, Fact, rng
from study.zoo.tasks import TASKS, TaskSpec, _choices, documents, task_config

SUFFIX = "__validation"
"""Appended to a task's name for the lm-eval task that scores its validation split."""
MIN_DOCS = 20
"""Fewer disjoint documents than this and a task has no validation split: a pick on 10 documents is noise."""
MISSES = 20000
"""Draws in a row without a new reserved question before the generator is taken as exhausted (``max``'s 41
reserved questions left after the test's 150 are each hit with p ~ 0.04 per draw, so all are found)."""


def _facts(spec: TaskSpec) -> list[Fact]:
    """Up to ``spec.docs`` reserved questions of the task's skill that its test documents do not ask, in a fixed
    order (their own seeded generator, so test's draws are untouched)."""
    skill = SKILLS[spec.skill]
    if not skill.heldout:
        return []
    asked = {d["question"] for d in documents(spec)}
    return skill.draw_eval_facts(rng("validation", skill.name), spec.docs, asked, max_misses=MISSES)


@cache
def validation_documents(task: str) -> tuple[dict[str, Any], ...]:
    """The validation documents of ``task`` (its lm-eval name), in the test documents' format; empty when it has
    no validation split."""
    spec = TASKS[task]
    facts = _facts(spec)
    if len(facts) < MIN_DOCS:
        return ()
    docs = []
    for i, fact in enumerate(facts):
        doc: dict[str, Any] = {"question": fact.question, "answer": fact.answer}
        if spec.output_type == "multiple_choice":
            doc["choices"] = _choices(spec, fact, spec.docs + i)  # distractors seeded apart from test's
            doc["label"] = doc["choices"].index(fact.answer)
        docs.append(doc)
    return tuple(docs)


def unavailable(task: str) -> str | None:
    """Why ``task`` has no validation split (None when it has one)."""
    spec = TASKS[task]
    skill = SKILLS[spec.skill]
    if not skill.heldout:
        return (f"its skill {skill.name!r} is a small table whose every fact is a test document and is trained "
                f"on, so no document is disjoint from both")
    n = len(_facts(spec))
    if n < MIN_DOCS:
        return (f"only {n} of its skill's reserved questions are not test documents (at least {MIN_DOCS} are "
                f"needed)")
    return None


@cache
def docs_digest(task: str) -> str:
    """SHA-256 of the validation documents: part of the validation task's identity, and of its file's name."""
    text = "\n".join(json.dumps(d, sort_keys=True) for d in validation_documents(task))
    return hashlib.sha256(text.encode()).hexdigest()


def data_file(zoo_path: Path, task: str) -> Path:
    """Where the validation documents of ``task`` live for the zoo at ``zoo_path`` (written on first use)."""
    return zoo_path / "validation" / f"{task}-{docs_digest(task)[:16]}.jsonl"


def write_documents(zoo_path: Path, task: str) -> Path:
    """The JSONL of ``task``'s validation documents under ``zoo_path``, written atomically unless present (its
    name carries its content's digest, so a present file is the right one)."""
    path = data_file(zoo_path, task)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(d) + "\n" for d in validation_documents(task)))
        os.replace(tmp, path)
    return path


def validation_config(task: str, zoo_path: Path) -> dict[str, Any]:
    """The lm-eval config that scores ``task``'s validation split: the test task's config (prompt, metric,
    filter, generation settings) on the validation documents, named ``<task>__validation``, with lm-eval's
    ``validation_split`` and no ``test_split``, so lm-eval evaluates ``validation_docs``."""
    config = task_config(TASKS[task], zoo_path)
    path = write_documents(zoo_path.resolve(), task)
    config.pop("test_split")
    config |= {"task": task + SUFFIX, "dataset_kwargs": {"data_files": {"validation": str(path)}},
               "validation_split": "validation"}
    return config
