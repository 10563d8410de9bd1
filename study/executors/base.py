"""The executor interface: take the cells a sweep still needs, run them somewhere, report counts.

Every executor relies on the store for idempotence and on claims for exclusion, so executors can be mixed
on one store (a local run next to a Slurm array) and any of them can be killed and restarted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from study.record import Outcome

if TYPE_CHECKING:
    from study.prepare import SweepContext
    from study.store import Store


@dataclass
class RunSummary:
    """What one ``run`` did. ``computed`` counts cells finished by this run; ``cached`` those done before."""

    computed: int = 0
    cached: int = 0
    failed: int = 0
    not_applicable: int = 0
    claimed_elsewhere: int = 0
    submitted: list[str] = field(default_factory=list)

    def add(self, outcome: "Outcome | str", n: int = 1) -> None:
        """Count ``n`` cells of a run outcome (``study.record.Outcome``: the field of that name)."""
        name = Outcome(outcome).value
        setattr(self, name, getattr(self, name) + n)

    def line(self) -> str:
        s = (f"cells: {self.computed} computed, {self.cached} cached, {self.failed} failed, "
             f"{self.not_applicable} not applicable")
        if self.claimed_elsewhere:
            s += f", {self.claimed_elsewhere} left to other workers"
        return s


class Executor(Protocol):
    def run(self, ctx: "SweepContext", store: "Store", *, retry_failed: bool = False, wait: bool = True) -> RunSummary:
        """Run every unique cell of ``ctx.plan`` that the store does not hold yet."""
        ...
