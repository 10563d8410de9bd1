"""Zoo families: one build pipeline, several tokenizers over the same skills.

A family is what differs between two zoos that share skills, tasks, shapes and the training loop: the
tokenizer, the root seed, and how its models are spelled (``zoo:add``, ``zoo-bpe:add``). ``char`` is the
original mini zoo (one token per character) and the default everywhere; its spec, directory name and
weights are exactly what they were before families existed (its ``spec`` is ``study.zoo.spec.spec``).
``bpe`` trains the same base mixture and experts with a byte-level BPE tokenizer (``study.zoo.bpe``), so
same-tokenizer merges run on either family and cross-tokenizer methods (knowledge fusion) have a real
second vocabulary to bridge.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study.errors import UserError
from study.zoo import spec as char_spec
from study.zoo.names import PREFIXES
from study.zoo.tasks import TASKS
from study.zoo.train import Schedule

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

DEFAULT = "char"


@dataclass(frozen=True)
class Family:
    """One family: its tokenizer kind, root seed, experts, schedules and base mixture (the shape, the tables'
    share and the step-by-step share are shared)."""

    name: str
    seed: str
    experts: dict[str, tuple[str, str]]
    base_schedule: Schedule
    expert_schedule: Schedule
    base_mixture: dict[str, float]

    @property
    def prefix(self) -> str:
        """How a sweep names this family's models: ``zoo:`` (char) or ``zoo-<family>:``."""
        return PREFIXES[self.name]

    def build_tokenizer(self) -> PreTrainedTokenizerFast:
        if self.name == "bpe":
            from study.zoo.bpe import build_bpe_tokenizer

            return build_bpe_tokenizer()
        from study.zoo.tokenizer import build_tokenizer

        return build_tokenizer()

    def own_task(self, expert: str) -> str:
        """The lm-eval task that measures the skill ``expert`` was fine-tuned on."""
        skill = self.experts[expert][0]
        return next(t.name for t in TASKS.values() if t.skill == skill)

    def spec(self, arch: str) -> dict[str, Any]:
        """Everything that determines this family's zoo of ``arch``: the char spec itself for ``char``; for
        another family that spec with its tokenizer, seed, experts, schedules and base mixture in place of the
        char ones."""
        base = char_spec.spec(arch)
        if self.name == DEFAULT:
            return base
        from study.zoo import bpe

        return base | {
            "family": self.name,
            "tokenizer": bpe.spec(),
            "seed": self.seed,
            "experts": self.experts,
            "base_schedule": self.base_schedule.as_dict(),
            "expert_schedule": self.expert_schedule.as_dict(),
            "base_mixture": self.base_mixture,
        }

    def spec_hash(self, arch: str) -> str:
        if self.name == DEFAULT:
            return char_spec.spec_hash(arch)
        text = json.dumps(self.spec(arch), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def dir_name(self, arch: str) -> str:
        """``zoo-<arch>-<hash>`` for char (unchanged), ``zoo-<family>-<arch>-<hash>`` for the others."""
        if self.name == DEFAULT:
            return char_spec.dir_name(arch)
        return f"zoo-{self.name}-{arch}-{self.spec_hash(arch)[:12]}"


BPE_BASE_MIXTURE = {
    **{k: w for k, w in char_spec.BASE_MIXTURE.items() if k not in ("first", "last")},
    "max": 0.05, "count": 0.1,
}  # fmt: skip
"""The char base's mixture without ``first`` and ``last``. Under BPE both are near-copies of a token (the
first letter of ``of xyzw?`` is the first token's own letter: ``Ġx`` answers ``Ġx``), and a base trained on
both learned one and answered the other with it: 0.80 on ``first`` and 0.06 on ``last`` with char's weights,
0.06 and 0.86 with ``first`` at 0.1 (zoo_first/zoo_last, 50 documents, AMD EPYC). Which one wins is luck of
the machine, and a base at 0.8 leaves its expert no margin; a base that never sees either question keeps both
margins a property of the data, as ``BASE_TABLE_PERCENT`` does for the tables. Without them the other
skills are drawn 1.5 times as often; ``max`` and ``count``, learnt fast, then reached 0.66 each (next to the
0.7 ceiling, and within 0.2 of the ``count`` expert's 0.84), so they are halved: 0.58 and 0.40."""

FAMILIES: dict[str, Family] = {
    "char": Family(
        "char", char_spec.SEED, char_spec.EXPERTS, char_spec.BASE_SCHEDULE, char_spec.EXPERT_SCHEDULE,
        char_spec.BASE_MIXTURE,
    ),
    "bpe": Family(
        "bpe", char_spec.SEED + "-bpe", char_spec.EXPERTS, char_spec.BASE_SCHEDULE, char_spec.EXPERT_SCHEDULE,
        BPE_BASE_MIXTURE,
    ),
}
"""The char family is the spec module's constants; bpe trains the same experts on the same schedules."""


def get_family(name: str) -> Family:
    """The family called ``name``, or a UserError naming the families there are."""
    if name not in FAMILIES:
        raise UserError(f"unknown zoo family {name!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
