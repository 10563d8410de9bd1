"""Expanding a sweep into cells, each keyed by a content hash.

A cell is (base, ordered subset of checkpoints, method, resolved hyper-parameters, evaluation config). Its key
hashes what decides its result and nothing else: each model's content identity, the method's name and version,
its parameters resolved through the method's schema (defaults filled, types coerced, ``c/k`` resolved, so
``density: 0.2``, ``density: 0.20`` and an omitted default are one cell, in any sweep), the evaluation config,
the tasks' identities, the evaluation bridge's version and the result-schema version. ``base`` and ``single``
cells have no method in their key: every method's curve shares them. Subsets are drawn once per (base, k) from
a seed and shared by every method (paired comparison); all single checkpoints are always evaluated, because
"best single of a subset" needs each of them.
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
from study.evaluate import EVAL_BRIDGE_VERSION

BASE, SINGLE, ENSEMBLE = "base", "single", "ensemble"
FUSION = "fusion"
FUSION_PREFIX = "fusion:"
"""A fusion cell's ``method`` is ``fusion:<name>`` (``study.fusion``): a series of its own, never a merge name."""
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
        if self.method.startswith(FUSION_PREFIX):
            return FUSION
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
    """Every cell of a sweep, in execution order (base and singles first: merges are compared with them).

    ``identities`` maps each model label to the identity its cells were keyed on and ``tasks`` each task to
    its identity, so a stored plan says exactly what its records were computed from.
    """

    sweep: Sweep
    cells: list[Cell]
    subsets: dict[str, dict[int, list[tuple[str, ...]]]] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)

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

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep.model_dump(mode="json"), "sweep_hash": self.sweep_hash,
                "cells": [c.to_json() for c in self.cells],
                "subsets": {b: {str(k): [list(s) for s in drawn] for k, drawn in by_k.items()}
                            for b, by_k in self.subsets.items()},
                "identities": self.identities, "tasks": self.tasks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        from study.config import parse_sweep

        subsets = {b: {int(k): [tuple(s) for s in drawn] for k, drawn in by_k.items()}
                   for b, by_k in data["subsets"].items()}
        return cls(parse_sweep(data["sweep"], "stored plan"), [Cell.from_json(c) for c in data["cells"]], subsets,
                   dict(data["identities"]), dict(data["tasks"]))


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
    return digest(RESULT_SCHEMA_VERSION, EVAL_BRIDGE_VERSION, *parts)[:24]


def resolve_point(method: str, point: dict[str, Any], k: int) -> dict[str, Any]:
    """A grid point as the method receives it at ``k``: through its schema, with every default filled in."""
    from study.methods.registry import get_method

    return get_method(method).resolve_params({p: resolve_value(v, k) for p, v in point.items()}, n_models=k)


def method_version(method: str) -> int:
    """The method's implementation version (``merge_method(..., version=N)``): bumping it recomputes its cells."""
    from study.methods.registry import get_method

    return get_method(method).version


def _applicability(method: str, k: int) -> str | None:
    from study.errors import NotApplicable
    from study.methods.registry import get_method

    try:
        get_method(method).check_k(k)
    except NotApplicable as exc:
        return str(exc)
    return None


def build_plan(sweep: Sweep, models: dict[str, ResolvedModel], check_applicability: bool = True,
               tasks: dict[str, str] | None = None, validation: dict[str, str] | None = None) -> Plan:
    """Expand ``sweep`` into cells; ``models`` maps every model label of the sweep to its resolved identity and
    ``tasks`` each task name to its identity (its name when it is not given: a task named by lm-eval).

    ``validation`` maps each validation task's name to its identity (``study.validation``; a selection sweep):
    its cells are scored on those too, so their keys add them. Without it the key is what it always was."""
    task_ids = {t: (tasks or {}).get(t, t) for t in sweep.evaluation.tasks}
    evaluation = {**sweep.evaluation.model_dump(mode="json", exclude=NOT_IN_KEY),
                  "tasks": [task_ids[t] for t in sweep.evaluation.tasks]}
    if validation:
        evaluation["validation"] = list(validation.values())
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
                version = method_version(method.name)
                for point in method.grid():
                    resolved = resolve_point(method.name, point, k)
                    for sid, subset in enumerate(drawn):
                        cid = _key("merge", base_id, [ident[x] for x in subset], method.name, version, resolved,
                                   evaluation, merge_opts)
                        cells.append(
                            Cell(cid, base.name, method.name, dict(point), resolved, k, sid, subset,
                                 method.label or method.name, reason)
                        )
            cells += _fusion_cells(sweep, base, base_id, ident, k, drawn, evaluation)
    identities = {label: m.identity for label, m in models.items()}
    return Plan(sweep, cells, subsets, identities, {**task_ids, **(validation or {})})


def _fusion_cells(sweep: Sweep, base: Any, base_id: str, ident: dict[str, str], k: int,
                  drawn: list[tuple[str, ...]], evaluation: dict[str, Any]) -> list[Cell]:
    """One cell per fusion method, grid point and drawn subset (the merges' subsets: paired comparisons).

    The key holds what decides the trained weights: the teachers' and the target's identities, the method's name
    and version, its parameters resolved through its schema (training parameters included), the corpus (a file
    by content digest) and the evaluation. ``params`` as written names ``target`` and ``corpus`` only where the
    sweep set them, so two fusion entries that differ in those are two curves."""
    from study.fusion.corpus import corpus_key
    from study.fusion.registry import get_fusion_method

    cells = []
    for spec in sweep.fusion:
        info = get_fusion_method(spec.name)
        target_id = base_id if spec.target == BASE else ident[spec.target]
        shown = {f: getattr(spec, f).model_dump(mode="json") if f == "corpus" else getattr(spec, f)
                 for f in ("target", "corpus") if f in spec.model_fields_set}
        for point in spec.grid():
            resolved = info.resolve_params({p: resolve_value(v, k) for p, v in point.items()})
            full = {**resolved, "target": spec.target, "corpus": spec.corpus.model_dump(mode="json")}
            for sid, subset in enumerate(drawn):
                cid = _key("fusion", base_id, target_id, [ident[x] for x in subset], spec.name, info.version,
                           resolved, corpus_key(spec.corpus), evaluation)
                cells.append(Cell(cid, base.name, FUSION_PREFIX + spec.name, {**point, **shown}, full, k, sid, subset,
                                  spec.label or f"fusion {spec.name}"))
    return cells
