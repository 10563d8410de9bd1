"""Preparing a sweep: every early check, model identities, the plan; and the plan a store keeps about itself.

``prepare`` does every check (schema, methods and parameters, checkpoint paths and compatibility, tasks) before
any model is loaded, then builds the plan. ``save_plan`` writes that plan into the store (typed cells, subsets,
the sweep, model identities and paths, task identities, the zoo's digest), so ``status`` and ``report`` read a
store with no sweep file, checkpoint, zoo or network at hand (``stored_context``); ``context_for`` chooses
between a sweep file's plan and the stored one and says what changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study import RESULT_SCHEMA_VERSION
from study.checkpoints import ZOO_PREFIX, ResolvedModel, resolve_model
from study.config import ModelRef, Sweep, load_sweep
from study.errors import UserError
from study.plan import Plan, build_plan
from study.zoo.names import is_zoo_task, task_name

if TYPE_CHECKING:
    from study.store import Store

PLAN_FILE = "plan.json"


@dataclass
class SweepContext:
    """A validated sweep with its models resolved and its plan built: all a worker needs to run cells.

    ``zoo`` is the digest of the mini zoo the sweep uses (None when it uses none).
    """

    sweep: Sweep
    models: dict[str, ResolvedModel]
    plan: Plan
    source: Path | None = None
    zoo_root: Path | None = None
    device: str = "cpu"
    zoo: str | None = None

    def base_model(self, base_name: str) -> ResolvedModel:
        spec = next(b for b in self.sweep.bases if b.name == base_name)
        return self.models[spec.model.label]


def uses_zoo(sweep: Sweep) -> bool:
    refs = [r for b in sweep.bases for r in (b.model, *b.checkpoints)]
    return any(r.model.startswith(ZOO_PREFIX) for r in refs) or any(is_zoo_task(t) for t in sweep.evaluation.tasks)


def resolve_models(sweep: Sweep, zoo_root: Path | None = None) -> dict[str, ResolvedModel]:
    models: dict[str, ResolvedModel] = {}
    for base in sweep.bases:
        for ref in [base.model, *base.checkpoints]:
            if ref.label not in models:
                models[ref.label] = resolve_model(ref, zoo_root)
    return models


def task_identities(sweep: Sweep, zoo: str | None) -> dict[str, str]:
    """A zoo task is its lm-eval name in the zoo of that digest (its data comes from the zoo), whichever spelling
    the sweep used (``zoo:add``, ``zoo_add`` and ``zoo:zoo_add`` are one task, so one cell); others their name."""
    return {t: f"{ZOO_PREFIX}{task_name(t)}@{zoo}" if is_zoo_task(t) else t for t in sweep.evaluation.tasks}


def check_methods(sweep: Sweep) -> None:
    """Unknown names (with a suggestion) and out-of-schema parameters, at every k the sweep merges."""
    from study.config import resolve_value
    from study.errors import MethodError
    from study.methods.registry import check_name, get_method

    for i, method in enumerate(sweep.methods):
        try:
            check_name(method.name)
            info = get_method(method.name)
            for point in method.grid():
                for k in [k for k in sweep.ks if k >= 2] or [2]:
                    info.resolve_params({p: resolve_value(v, k) for p, v in point.items()}, n_models=k)
        except MethodError as exc:
            raise MethodError(f"methods[{i}]: {exc}") from None
    check_fusion(sweep)


def check_fusion(sweep: Sweep) -> None:
    """Fusion entries: known names, parameters in schema, a target the base has, a corpus file that exists."""
    from study.config import resolve_value
    from study.errors import MethodError
    from study.fusion.registry import get_fusion_method

    for i, spec in enumerate(sweep.fusion):
        try:
            info = get_fusion_method(spec.name)
            for point in spec.grid():
                for k in [k for k in sweep.ks if k >= 2] or [2]:
                    info.resolve_params({p: resolve_value(v, k) for p, v in point.items()})
            for base in sweep.bases:
                labels = [c.label for c in base.checkpoints]
                if spec.target != "base" and spec.target not in labels:
                    raise MethodError(f"target {spec.target!r} is neither 'base' nor a checkpoint of base "
                                      f"{base.name} ({', '.join(labels)})")
            if spec.corpus.source == "file" and not Path(spec.corpus.path or "").is_file():
                raise MethodError(f"corpus: {spec.corpus.path} is not a text file")
            if spec.corpus.source == "lm_eval" and not spec.corpus.task:
                raise MethodError("corpus: source lm_eval needs a task (and optionally split: train|validation)")
        except MethodError as exc:
            raise MethodError(f"fusion[{i}]: {exc}") from None


def prepare(sweep: Sweep | str | Path, *, zoo_root: Path | None = None, device: str | None = None,
            check_compat: bool = True) -> SweepContext:
    """Every early check, then the plan. Loads no model; reads only configs, safetensors headers and (once per
    file, then cached) the weights' content digests."""
    source = None
    if not isinstance(sweep, Sweep):
        source = Path(sweep)
        sweep = load_sweep(source)
    try:
        return _prepare(sweep, source, zoo_root, device, check_compat)
    except UserError as exc:
        if source is None or str(exc).startswith(str(source)):
            raise
        raise type(exc)(f"{source}: {exc}") from None


def _prepare(sweep: Sweep, source: Path | None, zoo_root: Path | None, device: str | None,
             check_compat: bool) -> SweepContext:
    check_methods(sweep)
    zoo = None
    if uses_zoo(sweep):
        from study.zoo import load_zoo

        zoo = load_zoo(zoo_root).digest
    models = resolve_models(sweep, zoo_root)
    if check_compat:
        from study.compat import check_compatible

        for base in sweep.bases:
            check_compatible(models[base.model.label].path, [models[c.label].path for c in base.checkpoints],
                             vocab_mismatch=sweep.merge.vocab_mismatch)
    from study.evaluate import check_code_execution, resolve_tasks, unsafe_tasks

    tasks = resolve_tasks(sweep.evaluation.tasks, zoo_root)
    from study.validation import validation_tasks

    validation = validation_tasks(sweep, zoo_root, zoo)
    check_code_execution(unsafe_tasks(tasks + [v.spec for v in validation]), sweep.evaluation.allow_code_execution)
    plan = build_plan(sweep, models, tasks=task_identities(sweep, zoo),
                      validation={v.name: v.identity for v in validation} if validation else None)
    return SweepContext(sweep, models, plan, source, zoo_root, device or sweep.merge.device, zoo)


def save_plan(ctx: SweepContext, store: "Store") -> None:
    """Keep the plan, the models and the sweep next to the records: the store then describes itself."""
    import yaml

    doc = {"schema": RESULT_SCHEMA_VERSION, "name": ctx.sweep.name, **ctx.plan.to_json(),
           "models": {label: str(m.path) for label, m in ctx.models.items()},
           "source": str(ctx.source.resolve()) if ctx.source else None, "zoo": ctx.zoo}
    store.write_meta(PLAN_FILE, json.dumps(doc, indent=1).encode())
    store.write_meta("sweep.yaml", yaml.safe_dump(ctx.sweep.model_dump(mode="json"), sort_keys=False).encode())


def replaced_plan_changes(ctx: SweepContext, store: "Store") -> list[str]:
    """What differs between the plan ``run`` is about to store and the one it replaces (nothing when the
    store has none or an unreadable one): records of the old plan stay, and a report then shows the new one."""
    if store.read_meta(PLAN_FILE) is None:
        return []
    try:
        old = stored_context(store)
    except UserError:
        return []
    changes = plan_changes(old.plan, ctx.plan)
    return [f"this sweep replaces the plan stored in {store.root}:", *(f"  {c}" for c in changes)] if changes else []


def _refs(sweep: Sweep) -> dict[str, ModelRef]:
    return {r.label: r for b in sweep.bases for r in (b.model, *b.checkpoints)}


def stored_context(store: "Store") -> SweepContext:
    """The context of the plan the last ``run`` saved in ``store``; needs no checkpoint, zoo or network."""
    raw = store.read_meta(PLAN_FILE)
    if raw is None:
        raise UserError(f"{store.root}: no plan stored here (no `merge-study run` has saved one): give the sweep file")
    try:
        doc = json.loads(raw)
        if doc.get("schema") != RESULT_SCHEMA_VERSION:
            raise UserError(f"{store.root / PLAN_FILE}: a plan of result schema {doc.get('schema')}, this version "
                            f"reads {RESULT_SCHEMA_VERSION}: give the sweep file, or run it again to store a new plan")
        plan = Plan.from_json(doc)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{store.root / PLAN_FILE}: unreadable stored plan ({type(exc).__name__}): give the sweep "
                        f"file, or run it again to store a new plan") from None
    refs = _refs(plan.sweep)
    models = {label: ResolvedModel(refs[label], Path(path), plan.identities[label])
              for label, path in doc["models"].items() if label in refs}
    source = Path(doc["source"]) if doc.get("source") else None
    return SweepContext(plan.sweep, models, plan, source, None, plan.sweep.merge.device, doc.get("zoo"))


def plan_changes(old: Plan, new: Plan) -> list[str]:
    """One line per difference between a stored plan and a sweep file's plan (methods, ks, models, ...)."""
    a, b = old.sweep.model_dump(mode="json"), new.sweep.model_dump(mode="json")
    lines = []
    ma = {json.dumps(m, sort_keys=True): m for m in a["methods"]}
    mb = {json.dumps(m, sort_keys=True): m for m in b["methods"]}
    lines += [f"method added: {_method(m)}" for key, m in mb.items() if key not in ma]
    lines += [f"method removed: {_method(m)}" for key, m in ma.items() if key not in mb]
    for field in sorted(set(a) | set(b)):
        if field != "methods" and a.get(field) != b.get(field):
            lines.append(f"{field} changed: {_short(a.get(field))} -> {_short(b.get(field))}")
    for label in sorted(set(old.identities) & set(new.identities)):
        if old.identities[label] != new.identities[label]:
            lines.append(f"model {label} changed content: {old.identities[label][:19]} -> {new.identities[label][:19]}")
    for task in sorted(set(old.tasks) & set(new.tasks)):
        if old.tasks[task] != new.tasks[task]:
            lines.append(f"task {task} changed: {old.tasks[task]} -> {new.tasks[task]}")
    return lines


def _method(m: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in m.get("params", {}).items())
    return f"{m['name']}({params})"


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 3] + "..."


def context_for(sweep: Path | None, store: "Store", zoo_root: Path | None = None) -> tuple[SweepContext, list[str]]:
    """The context ``status`` and ``report`` use, and notes for the user (one line each).

    Without a sweep file: the stored plan. With one: its plan when it can be built (the changes since the
    stored plan listed), else the stored plan with the reason; with no stored plan, the sweep file's plan.
    """
    stored = stored_context(store) if store.read_meta(PLAN_FILE) is not None else None
    if sweep is None:
        if stored is None:
            raise UserError(f"{store.root}: no plan stored here (no `merge-study run` has saved one): give the sweep file")
        return stored, []
    if stored is None:
        return prepare(sweep, zoo_root=zoo_root, check_compat=False), []
    try:
        ctx = prepare(sweep, zoo_root=zoo_root, check_compat=False)
    except UserError as exc:
        return stored, [f"using the plan stored in {store.root}: {sweep} cannot be planned here ({exc})"]
    changes = plan_changes(stored.plan, ctx.plan)
    if changes:
        return ctx, [f"{sweep} changed since the plan stored in {store.root}:", *(f"  {c}" for c in changes)]
    return ctx, []
