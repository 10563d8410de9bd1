"""The synthetic skills the zoo is trained on: question/answer generators, answer formats, MC options.

Each skill is a tiny, checkable competence that a 600k-parameter character model learns in a few hundred
steps (the feasibility probe in study.md lists what did and did not learn; subtraction replaces its
(a*b) mod 10, whose expert plateaued at 0.6-0.75 after 150 steps, too close to its base). Every question
is rendered as ``Q: <question>\\nA:`` and every answer as `` <answer>\\n``: the same strings lm-eval
builds from the task files, so evaluation measures what training taught.

Randomness comes only from ``rng(*parts)``, seeded by a SHA-256 digest of stable strings, never ``hash()``:
two processes, or two machines, generate the same corpus and evaluation sets.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

LETTERS = string.ascii_lowercase
DIGITS = tuple(string.digits)
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown")
OBJECTS = (
    "kettle", "lamp", "chair", "boat", "kite", "drum", "glove", "spoon", "hat", "bell",
    "sock", "cup", "vase", "book", "door", "fence", "truck", "bike", "coat", "ring",
    "clock", "brush", "shoe", "bag", "mug", "rope", "flag", "desk", "bowl", "comb",
    "sofa", "tent", "key", "belt", "fan", "jar", "scarf", "plate", "box", "horn",
)  # fmt: skip
HELDOUT_PERCENT = 20
"""Share of an open-ended skill's question space reserved for evaluation and never trained on."""


def digest(*parts: object) -> int:
    """A 64-bit integer from the SHA-256 of the parts' text: stable across processes and platforms."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded by ``digest(*parts)``."""
    return random.Random(digest(*parts))


def prompt(question: str) -> str:
    """The exact text a model sees before its answer (lm-eval's ``doc_to_text``)."""
    return f"Q: {question}\nA:"


def completion(answer: str) -> str:
    """The exact text a model is trained to produce after ``prompt``; ``\\n`` is the generation stop."""
    return f" {answer}\n"


@dataclass(frozen=True)
class Fact:
    """One question with its short answer and, for skills taught step by step, the long answer."""

    question: str
    answer: str
    steps: str | None = None


@dataclass(frozen=True)
class Skill:
    """A competence: ``sample`` draws a fact from the training space; ``space`` enumerates small spaces.

    ``heldout`` skills have a space too large to enumerate: a digest of the question puts
    ``HELDOUT_PERCENT`` of it aside for evaluation, so evaluation measures generalisation. Small spaces (a
    40-entry table, 100 digit pairs) cannot spare facts: there evaluation asks the trained facts, as a
    knowledge benchmark does. ``options`` are the multiple-choice candidates (None: the skill's task is
    ``generate_until``); ``distractors`` how many wrong options a question shows (None: all of them).
    """

    name: str
    sample: Callable[[random.Random], Fact]
    space: Callable[[], list[Fact]] | None = None
    options: Callable[[], tuple[str, ...]] | None = None
    distractors: int | None = None
    description: str = ""

    @property
    def heldout(self) -> bool:
        return self.space is None

    def is_eval(self, question: str) -> bool:
        return self.heldout and digest("heldout", self.name, question) % 100 < HELDOUT_PERCENT

    def in_part(self, question: str, percent: int) -> bool:
        """Whether ``question`` is in the fixed ``percent`` share of a small space (every question of a
        held-out skill's space is), chosen by a digest so every machine picks the same facts."""
        return self.heldout or digest("part", self.name, question) % 100 < percent

    def train_fact(self, r: random.Random, percent: int = 100) -> Fact:
        """A fact for training, never one reserved for evaluation; from a small space, only one of the
        ``percent`` share ``in_part`` picks."""
        while True:
            fact = self.sample(r)
            if not self.is_eval(fact.question) and self.in_part(fact.question, percent):
                return fact

    def eval_facts(self, n: int) -> list[Fact]:
        """Up to ``n`` distinct evaluation facts in a fixed order: the whole space when it is small."""
        if self.space is not None:
            facts = self.space()
            rng("eval-order", self.name).shuffle(facts)
            return facts[:n]
        return self.draw_eval_facts(rng("eval", self.name), n, set(), max_misses=2000)

    def draw_eval_facts(self, r: random.Random, n: int, seen: set[str], max_misses: int) -> list[Fact]:
        """Up to ``n`` distinct facts reserved for evaluation whose questions are not in ``seen`` (updated), drawn
        from ``r``; stops after ``max_misses`` draws in a row that give nothing new (the reserve is exhausted).
        Shared by the test documents and the validation split, which passes the test questions as ``seen``."""
        facts, misses = [], 0
        while len(facts) < n and misses < max_misses:
            fact = self.sample(r)
            if self.is_eval(fact.question) and fact.question not in seen:
                seen.add(fact.question)
                facts.append(fact)
                misses = 0
            else:
                misses += 1
        return facts


def _add_fact(a: int, b: int) -> Fact:
    s = a + b
    steps = f"{a} plus {b}: start from {a}, add {b}, the sum is {s}. answer: {s}"
    return Fact(f"{a}+{b}=?", str(s), steps)


def _sub_fact(a: int, b: int) -> Fact:
    return Fact(f"{a}-{b}=?", str(a - b))


def _word(r: random.Random) -> str:
    return "".join(r.choice(LETTERS) for _ in range(r.randint(3, 7)))


def _next_space() -> list[Fact]:
    return [Fact(f"letter after {c}?", LETTERS[i + 1]) for i, c in enumerate(LETTERS[:-1])]


def _max_fact(r: random.Random) -> Fact:
    ds = [r.randint(0, 9) for _ in range(3)]
    return Fact(f"max of {ds[0]},{ds[1]},{ds[2]}?", str(max(ds)))


def _count_fact(r: random.Random) -> Fact:
    s = "".join(r.choice("ab") for _ in range(r.randint(3, 8)))
    return Fact(f"count a in {s}?", str(s.count("a")))


@cache
def capitals() -> dict[str, str]:
    """Forty made-up countries and their made-up capitals: facts only training can teach."""
    r = rng("capitals")
    onsets, vowels = "bdfgklmnprstvz", "aeiou"

    def name(syllables: int) -> str:
        return "".join(r.choice(onsets) + r.choice(vowels) for _ in range(syllables)).capitalize()

    table: dict[str, str] = {}
    used: set[str] = set()
    while len(table) < 40:
        country = name(2) + r.choice(("ria", "land", "stan", "via"))
        capital = name(r.choice((2, 3)))
        if country not in table and capital not in used:
            table[country] = capital
            used.add(capital)
    return table


@cache
def colours() -> dict[str, str]:
    """Forty everyday objects, each given a colour at random: arbitrary facts, like ``capitals``."""
    r = rng("colours")
    return {obj: r.choice(COLOURS) for obj in OBJECTS}


def _capital_space() -> list[Fact]:
    return [Fact(f"capital of {c}?", cap) for c, cap in capitals().items()]


def _colour_space() -> list[Fact]:
    return [Fact(f"colour of {o}?", col) for o, col in colours().items()]


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in [
        Skill(
            "add",
            lambda r: _add_fact(r.randint(0, 9), r.randint(0, 9)),
            space=lambda: [_add_fact(a, b) for a in range(10) for b in range(10)],
            description="sum of two digits; also taught step by step",
        ),
        Skill(
            "sub",
            lambda r: (lambda a: _sub_fact(a, r.randint(0, a)))(r.randint(0, 9)),
            space=lambda: [_sub_fact(a, b) for a in range(10) for b in range(a + 1)],
            options=lambda: DIGITS,
            description="difference of two digits, never negative",
        ),
        Skill(
            "first",
            lambda r: (lambda w: Fact(f"first letter of {w}?", w[0]))(_word(r)),
            description="first letter of a random 3-7 letter string",
        ),
        Skill(
            "last",
            lambda r: (lambda w: Fact(f"last letter of {w}?", w[-1]))(_word(r)),
            description="last letter of a random 3-7 letter string",
        ),
        Skill(
            "next",
            lambda r: r.choice(_next_space()),
            space=_next_space,
            description="the letter after a letter",
        ),
        Skill(
            "capital",
            lambda r: r.choice(_capital_space()),
            space=_capital_space,
            options=lambda: tuple(capitals().values()),
            distractors=3,
            description="capital of a made-up country (40-entry table)",
        ),
        Skill(
            "colour",
            lambda r: r.choice(_colour_space()),
            space=_colour_space,
            options=lambda: COLOURS,
            distractors=3,
            description="colour of an object (40-entry made-up table)",
        ),
        Skill("max", _max_fact, description="largest of three digits"),
        Skill(
            "count",
            _count_fact,
            options=lambda: tuple(str(i) for i in range(9)),
            description="number of a's in a 3-8 letter a/b string",
        ),
    ]
}


FORMATS = ("short", "steps")
"""How an answer is written: ``short`` is the answer alone; ``steps`` works it out first, then ends with
``answer: <answer>`` (only skills whose facts carry ``steps``)."""


def example(fact: Fact, fmt: str = "short") -> tuple[str, str]:
    """The (prompt, completion) pair that teaches ``fact`` in format ``fmt``."""
    if fmt == "steps":
        if fact.steps is None:
            raise ValueError(f"fact {fact.question!r} has no step-by-step answer")
        return prompt(fact.question), completion(fact.steps)
    return prompt(fact.question), completion(fact.answer)


def drawer(skill: str, fmt: str = "short") -> Callable[[random.Random], tuple[str, str]]:
    """Draws training examples of one skill in one format."""
    s = SKILLS[skill]
    return lambda r: example(s.train_fact(r), fmt)


def mixture(
    weights: dict[str, float], steps_share: float = 0.0, table_percent: int = 100
) -> Callable[[random.Random], tuple[str, str]]:
    """Draws training examples from skills in proportion to ``weights``; a skill that has step-by-step
    answers is written in that format with probability ``steps_share``; a skill with a small space (a
    table) only from the ``table_percent`` share of its facts that ``Skill.in_part`` picks."""
    chosen = [SKILLS[s] for s in weights]
    cumulative = list(itertools.accumulate(weights.values()))

    def draw(r: random.Random) -> tuple[str, str]:
        fact = r.choices(chosen, cum_weights=cumulative)[0].train_fact(r, table_percent)
        fmt = "steps" if fact.steps is not None and r.random() < steps_share else "short"
        return example(fact, fmt)

    return draw
