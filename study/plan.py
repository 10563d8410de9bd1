"""Expanding a sweep into cells, each keyed by a content hash.

A cell is (base, ordered subset of checkpoints, method, resolved hyper-parameters, evaluation config). Its key
hashes all of that plus each model's identity and the result-schema version, so a changed input is never
mistaken for a done cell. ``base`` and ``single`` cells have no method in their key: every method's curve
shares them. Subsets are drawn once per (base, k) from a seed and shared by every method (paired comparison);
all single checkpoints are always evaluated, because "best single of a subset" needs each of them.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from study import RESULT_SCHEMA_VERSION
from study.checkpoints import ResolvedModel, digest
from study.config import Sweep, resolve_value

BASE, SINGLE, ENSEMBLE = "base", "single", "ensemble"
NOT_IN_KEY = {"ensemble"}
"""Evaluation fields that choose which cells exist but do not change any cell's result."""


@dataclass(frozen=True)
class Cell:
    """One unit of work and one record in the store."""

    cell_id: str
    base: str
    method: str
    params: dict[str, Any]
    resolved_params: dict[str, Any]
    k: int
    subset_id: int
    checkpoints: tuple[str, ...]
    method_label: str = ""
    not_applicable: str | None = None

    @property
    def kind(self) -> str:
        return self.method if self.method in (BASE, SINGLE, ENSEMBLE) else "merge"

    @property
    def params_key(self) -> str:
        """The grid point as written in the sweep (``"1/k"`` unresolved): what a curve groups by."""
        return json.dumps(self.params, sort_keys=True)

    def describe(self) -> str:
        if self.method == BASE:
            return f"{self.base}: base"
        if self.method == SINGLE:
            return f"{self.base}: single {self.checkpoints[0]}"
        if self.method == ENSEMBLE:
            return f"{self.base}: ensemble k={self.k} #{self.subset_id}"
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.base}: {self.method}({p}) k={self.k} #{self.subset_id}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoints"] = list(self.checkpoints)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Cell":
        return cls(**{**d, "checkpoints": tuple(d["checkpoints"])})


@dataclass
class Plan:
    """Every cell of a sweep, in execution order (base and singles first: merges are compared with them)."""

    sweep: Sweep
    cells: list[Cell]
    subsets: dict[str, dict[int, list[tuple[str, ...]]]] = field(default_factory=dict)

    def unique_cells(self) -> list[Cell]:
        """Cells to compute, one per key: two grid points that resolve to the same parameters at some k
        (``lambda: [0.5, "1/k"]`` at k = 2) share one record, and both curves show it."""
        return list(self.by_id().values())

    def by_id(self) -> dict[str, Cell]:
        out: dict[str, Cell] = {}
        for c in self.cells:
            out.setdefault(c.cell_id, c)
        return out

    @property
    def sweep_hash(self) -> str:
        return digest(self.sweep.model_dump(mode="json"))[:16]


def draw_subsets(labels: list[str], k: int, per_k: int, seed: int, base_name: str) -> list[tuple[str, ...]]:
    """``per_k`` distinct k-subsets (each in checkpoint order), or all of them when C(n, k) <= per_k."""
    n = len(labels)
    if math.comb(n, k) <= per_k:
        return [tuple(labels[i] for i in idx) for idx in itertools.combinations(range(n), k)]
    rng = random.Random(int(digest("subsets", seed, base_name, k)[:16], 16))
    seen: list[tuple[int, ...]] = []
    while len(seen) < per_k:
        idx = tuple(sorted(rng.sample(range(n), k)))
        if idx not in seen:
            seen.append(idx)
    return [tuple(labels[i] for i in idx) for idx in seen]


def _key(*parts: Any) -> str:
    return digest(RESULT_SCHEMA_VERSION, *parts)[:24]


def _applicability(method: str, k: int) -> str | None:
    from study.errors import NotApplicable
    from study.methods.registry import get_method

    try:
        get_method(method).check_k(k)
    except NotApplicable as exc:
        return str(exc)
    return None


def build_plan(sweep: Sweep, models: dict[str, ResolvedModel], check_applicability: bool = True) -> Plan:
    """Expand ``sweep`` into cells; ``models`` maps every model label of the sweep to its resolved identity."""
    evaluation = sweep.evaluation.model_dump(mode="json", exclude=NOT_IN_KEY)
    merge_opts = {"vocab_mismatch": sweep.merge.vocab_mismatch}
    cells: list[Cell] = []
    subsets: dict[str, dict[int, list[tuple[str, ...]]]] = {}
    for base in sweep.bases:
        base_id = models[base.model.label].identity
        labels = [c.label for c in base.checkpoints]
        ident = {lab: models[lab].identity for lab in labels}
        cells.append(Cell(_key("base", base_id, evaluation), base.name, BASE, {}, {}, 0, 0, ()))
        for i, lab in enumerate(labels):
            cid = _key("single", base_id, ident[lab], evaluation)
            cells.append(Cell(cid, base.name, SINGLE, {}, {}, 1, i, (lab,)))
        subsets[base.name] = {}
        for k in sweep.ks:
            if k == 1:
                continue
            drawn = draw_subsets(labels, k, sweep.subsets.per_k, sweep.seed, base.name)
            subsets[base.name][k] = drawn
            if sweep.evaluation.ensemble:
                for sid, subset in enumerate(drawn):
                    cid = _key("ensemble", base_id, [ident[x] for x in subset], evaluation)
                    cells.append(Cell(cid, base.name, ENSEMBLE, {}, {}, k, sid, subset, "output ensemble"))
            for method in sweep.methods:
                reason = _applicability(method.name, k) if check_applicability else None
                for point in method.grid():
                    resolved = {p: resolve_value(v, k) for p, v in point.items()}
                    for sid, subset in enumerate(drawn):
                        cid = _key("merge", base_id, [ident[x] for x in subset], method.name, resolved, evaluation, merge_opts)
                        cells.append(
                            Cell(cid, base.name, method.name, dict(point), resolved, k, sid, subset,
                                 method.label or method.name, reason)
                        )
    return Plan(sweep, cells, subsets)
