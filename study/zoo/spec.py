"""What the mini zoo is: every constant that determines its contents, and the hash that names a build.

The build directory is ``zoo-<arch>-<hash[:12]>`` where the hash covers this module's constants, the
skills, the tasks, ``ZOO_VERSION`` and a digest of the data the skills produce (every evaluation document
and a sample of every expert's training examples), so editing a skill's generator also renames the zoo.
Change the training loop or the model code without changing a constant and you must bump ``ZOO_VERSION``:
code is not hashed.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from study.zoo.model import Shape, check_arch
from study.zoo.skills import HELDOUT_PERCENT, SKILLS, capitals, colours, drawer, mixture, rng
from study.zoo.tasks import FINAL_ANSWER, TASKS, documents, spec_dicts
from study.zoo.train import THREADS, Schedule

ZOO_VERSION = "2"

SHAPE = Shape(hidden=128, intermediate=256, layers=4, heads=4, kv_heads=2)
BASE_SCHEDULE = Schedule(steps=400, lr=3e-3, batch=32, warmup=20, final_fraction=0.1)
EXPERT_SCHEDULE = Schedule(steps=150, lr=3e-3, batch=32, warmup=10, final_fraction=0.1)
"""Experts train until they master their skill (0.98-1.0 on its task in most robustness runs, never below
0.72; bench/RESULTS.md): the margin over the base is then set by what the base cannot know, not by how far
150 steps happened to get. Version 1 (1e-3, constant) left ``sub``, ``first`` and ``add`` at 0.75-0.95."""
BASE_MIXTURE = {
    "add": 1.5, "sub": 1.0, "first": 1.5, "last": 1.0, "next": 0.6,
    "capital": 0.6, "colour": 0.6, "max": 0.1, "count": 0.2,
}  # fmt: skip
"""How often the base sees each skill. The base must know every format and master no skill on any machine:
version 1's base (add, sub, first 1.5; max, count, tables 0.3) scored 0.45 on ``max`` and 0.08 on ``next``
where paper/mini was made, 0.75 and 0.36 on an AVX-512 EPYC, and 0.82 on ``max`` and 0.88 on ``sub`` on an
AVX-512 Xeon, where the ``sub`` expert fell below it: the margins were luck. The open skills a small model
learns fast (``max``, ``count``) are seen rarely; the letter skills, slow to start, more often; tables are
bounded by design (``BASE_TABLE_PERCENT``), so the base can see them often enough to know its half."""
BASE_TABLE_PERCENT = 50
"""Share of each small skill's facts (the tables: sums, differences, next letters, capitals, colours) the
base is trained on; experts learn them all, and evaluation asks them all. A base that knows its half
perfectly still scores at most about half plus chance on the rest, so each table expert's margin is a
property of the data (>= 0.3), not of how far the base's training got on a given CPU."""
BASE_STEPS_SHARE = 0.3
"""Share of the base's ``add`` examples written step by step: the base knows both formats, so the two
``add`` experts differ only in which one fine-tuning made habitual."""

EXPERTS: dict[str, tuple[str, str]] = {
    "add": ("add", "short"),
    "add_steps": ("add", "steps"),
    "sub": ("sub", "short"),
    "first": ("first", "short"),
    "last": ("last", "short"),
    "next": ("next", "short"),
    "capital": ("capital", "short"),
    "colour": ("colour", "short"),
    "max": ("max", "short"),
    "count": ("count", "short"),
}
"""Expert name -> (skill, answer format) it is fine-tuned on."""

SEED = "merge-study-zoo"
"""Root of every seed (model init, training batches): combined with the model's name through a digest."""


def own_task(expert: str) -> str:
    """The task that measures the skill ``expert`` was fine-tuned on."""
    skill = EXPERTS[expert][0]
    return next(t.name for t in TASKS.values() if t.skill == skill)


def spec(arch: str) -> dict[str, Any]:
    """Everything that determines a zoo of architecture ``arch``, as JSON-able data."""
    return {
        "zoo_version": ZOO_VERSION,
        "arch": check_arch(arch),
        "seed": SEED,
        "shape": SHAPE.as_dict(),
        "base_schedule": BASE_SCHEDULE.as_dict(),
        "expert_schedule": EXPERT_SCHEDULE.as_dict(),
        "base_mixture": BASE_MIXTURE,
        "base_steps_share": BASE_STEPS_SHARE,
        "base_table_percent": BASE_TABLE_PERCENT,
        "experts": EXPERTS,
        "skills": {name: s.description for name, s in SKILLS.items()},
        "heldout_percent": HELDOUT_PERCENT,
        "tasks": spec_dicts(),
        "final_answer_regex": FINAL_ANSWER,
        "threads": THREADS,
        "data_digest": data_digest(),
    }


@cache
def data_digest() -> str:
    """SHA-256 of what the skills generate: tables, evaluation documents, sample training examples."""
    h = hashlib.sha256()
    h.update(json.dumps([capitals(), colours()], sort_keys=True).encode())
    for task in TASKS.values():
        h.update(json.dumps(documents(task), sort_keys=True).encode())
    base = mixture(BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT)
    draws = [base] + [drawer(s, f) for s, f in EXPERTS.values()]
    for draw in draws:
        r = rng("spec-sample")
        h.update(json.dumps([draw(r) for _ in range(20)]).encode())
    return h.hexdigest()


def spec_hash(arch: str) -> str:
    """SHA-256 of ``spec(arch)`` as canonical JSON."""
    text = json.dumps(spec(arch), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def dir_name(arch: str) -> str:
    return f"zoo-{arch}-{spec_hash(arch)[:12]}"
