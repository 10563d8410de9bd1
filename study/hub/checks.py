"""A sweep's hub checks, before any download: on the hub when it can be reached, else from the local cache.

Online, every hub model is probed (``study.hub.remote``, in parallel: a paper sweep names about fifty) and each
checkpoint is checked against its base with ``study.compat``'s own checks, on configs and on tensor shapes and
dtypes from the safetensors headers; its lineage is checked from the model cards (``study.hub.lineage``). A local
or zoo model on either side is read from its directory. Offline (``HF_HUB_OFFLINE``, or the hub unreachable),
what the cache holds is checked by ``prepare`` as for any run; here the lineage comes from the lock file that
``fetch`` wrote, and the report names the checks that were not done.

Problems are collected, not raised: a sweep of fifty models shows every missing, gated or mismatched one at once.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from study.checkpoints import is_hub_ref, model_dir
from study.config import ModelRef, Sweep
from study.errors import CheckpointError, UserError
from study.hub.client import HubUnreachable, endpoint, explain, hub_api, offline, quiet
from study.hub.lineage import ancestors, lineage_problem
from study.hub.lock import LOCK_FILE, ModelsLock
from study.hub.remote import HeaderSource, RemoteModel, card_bases, probe

WORKERS = 8
"""Models probed at once: each probe is a handful of small requests, so latency, not bandwidth, bounds it."""


class HubReport(BaseModel):
    """The outcome of a sweep's hub checks. ``models``: what the hub said of each hub model that answered
    (online); ``cached``: the commit the local cache holds of each (offline); ``ancestors``: lineage by label;
    ``errors`` stop ``fetch`` before any download; ``warnings`` and ``notes`` are printed."""

    online: bool
    endpoint: str = ""
    reason: str = Field(default="", description="offline: why the hub was not asked")
    models: dict[str, RemoteModel] = Field(default_factory=dict)
    cached: dict[str, str] = Field(default_factory=dict)
    ancestors: dict[str, list[str]] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def hub_refs(sweep: Sweep) -> list[ModelRef]:
    """The sweep's hub models (bases and checkpoints), each once, in file order."""
    refs: dict[str, ModelRef] = {}
    for base in sweep.bases:
        for ref in (base.model, *base.checkpoints):
            if is_hub_ref(ref):
                refs.setdefault(ref.label, ref)
    return list(refs.values())


def cached_commit(ref: ModelRef) -> str | None:
    """The commit the local Hugging Face cache resolves ``ref``'s revision to (as ``run`` will), when it holds
    that commit's config."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "adapter_config.json"):
        found = try_to_load_from_cache(ref.model, name, revision=ref.revision or "main")
        if isinstance(found, str):
            return Path(found).parent.name
    return None


def check_sweep(sweep: Sweep, *, zoo_root: Path | None = None, lock: ModelsLock | None = None) -> HubReport:
    """Check every hub model of ``sweep`` at the commit ``lock`` pins for it, else at the revision it names."""
    refs = hub_refs(sweep)
    if not refs:
        return HubReport(online=False)
    if offline():
        return _from_cache(sweep, refs, lock, "HF_HUB_OFFLINE is set")
    pins = lock.pins() if lock else {}
    with quiet(), ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda ref: _probe(ref, pins.get(ref.label)), refs))
    down = next((r for r in results if isinstance(r, HubUnreachable)), None)
    if down is not None:
        return _from_cache(sweep, refs, lock, f"{endpoint()} cannot be reached")
    report = HubReport(online=True, endpoint=endpoint())
    for ref, result in zip(refs, results):
        if isinstance(result, RemoteModel):
            report.models[ref.label] = result
        else:
            report.errors.append(str(result))
    lookup = _card_lookup()
    with quiet(), ThreadPoolExecutor(WORKERS) as pool:
        found = list(pool.map(lambda m: ancestors(m.card_base, lookup), report.models.values()))
    report.ancestors = dict(zip(report.models, found))
    _check_bases(sweep, report, zoo_root)
    return report


def _probe(ref: ModelRef, commit: str | None) -> RemoteModel | UserError:
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        return probe(ref, commit)
    except UserError as exc:
        return exc
    except RevisionNotFoundError:
        if commit is None:
            return UserError(f"{ref.label}: no revision {ref.revision} on the hub: check it (a branch, tag or commit)")
        return UserError(f"{ref.label}: commit {commit[:12]}, pinned in {LOCK_FILE}, is no longer on the hub: "
                         f"`merge-study fetch --update` pins its {ref.revision or 'main'} as it is now")
    except Exception as exc:  # huggingface_hub's errors, worded in one line (others re-raised: bugs)
        return explain(exc, ref.label, ref.model)


def _card_lookup() -> Callable[[str], list[str] | None]:
    """A memoised ``base_model`` lookup of any hub model's card (None when it cannot be read)."""
    api, memo = hub_api(), {}

    def lookup(repo: str) -> list[str] | None:
        if repo not in memo:
            try:
                memo[repo] = card_bases(api.model_info(repo).card_data)
            except Exception:  # an ancestor that is gone, private or unreachable ends its branch of the lineage
                memo[repo] = None
        return memo[repo]

    return lookup


def _check_bases(sweep: Sweep, report: HubReport, zoo_root: Path | None) -> None:
    """Each checkpoint against its base (configs and tensors) and its lineage, problems into ``report``."""
    sides: dict[str, Any] = {}
    for base in sweep.bases:
        base_side = _side(base.model, report, zoo_root, sides)
        base_repo = base.model.model if is_hub_ref(base.model) else None
        for ckpt in base.checkpoints:
            side = _side(ckpt, report, zoo_root, sides)
            if base_side is not None and side is not None:
                try:
                    from study.compat import check_pair

                    check_pair(base_side[0], base_side[1], side[0], side[1], ckpt.label,
                               vocab_mismatch=sweep.merge.vocab_mismatch)
                except CheckpointError as exc:
                    report.errors.append(str(exc))
            if ckpt.label in report.ancestors:
                _lineage(sweep, report, ckpt.label, base_repo, base.model.label)


def _lineage(sweep: Sweep, report: HubReport, label: str, base_repo: str | None, base_label: str) -> None:
    if base_repo is None:
        note = f"lineage not checked against the base {base_label}: it is not a hub id"
        if note not in report.notes:
            report.notes.append(note)
        return
    problem = lineage_problem(label, report.ancestors[label], base_repo)
    if problem is not None:
        (report.errors if sweep.lineage == "strict" else report.warnings).append(problem)


def _side(ref: ModelRef, report: HubReport, zoo_root: Path | None, sides: dict[str, Any]) -> Any:
    """``(config, tensor source)`` of a model, from the hub's headers or from its local directory; None when it
    cannot be compared here (its probe failed, or a LoRA adapter: checked against its base after download)."""
    if ref.label in sides:
        return sides[ref.label]
    side = None
    if is_hub_ref(ref):
        remote = report.models.get(ref.label)
        if remote is not None and remote.adapter:
            report.notes.append(f"{ref.label}: a LoRA adapter: checked against its base once downloaded (`validate`)")
        elif remote is not None:
            side = (remote.config, HeaderSource(remote))
    else:
        from study.lora import is_lora_dir
        from study.tensors import SafetensorsSource

        try:
            path = model_dir(ref.model, zoo_root)
            if not is_lora_dir(path):
                side = (json.loads((path / "config.json").read_text()), SafetensorsSource(path))
        except UserError as exc:
            report.errors.append(str(exc))
    sides[ref.label] = side
    return side


def _from_cache(sweep: Sweep, refs: list[ModelRef], lock: ModelsLock | None, reason: str) -> HubReport:
    """Offline: lineage from the lock file for what the cache holds at the locked commit; the rest (configs,
    shapes, vocabularies) is ``prepare``'s, as for a run. The notes name what was not checked."""
    report = HubReport(online=False, endpoint=endpoint(), reason=reason)
    locked = lock.models if lock else {}
    unknown = []
    for ref in refs:
        commit = cached_commit(ref)
        entry = locked.get(ref.label)
        if entry is not None and commit is not None and entry.commit != commit:
            report.warnings.append(f"{ref.label}: the local cache's {entry.revision} is commit {commit[:12]}, but "
                                   f"{LOCK_FILE} pins {entry.commit[:12]}: `merge-study fetch` the sweep (online) "
                                   f"to restore the pinned commit, or `fetch --update` to pin the new one")
        if commit is None:
            continue
        report.cached[ref.label] = commit
        if entry is not None and entry.commit == commit:
            report.ancestors[ref.label] = entry.ancestors
        elif any(ref in b.checkpoints for b in sweep.bases):
            unknown.append(ref.label)
    for base in sweep.bases:
        base_repo = base.model.model if is_hub_ref(base.model) else None
        for ckpt in base.checkpoints:
            if ckpt.label in report.ancestors:
                _lineage(sweep, report, ckpt.label, base_repo, base.model.label)
    lineage = (f"; lineage of {', '.join(unknown)} (not recorded in {LOCK_FILE}: `fetch` records it)"
               if unknown else "")
    report.notes.append(f"hub not reached ({reason}): not checked: existence on the hub, access (gated or private)"
                        f"{lineage}; configs, tensor shapes and dtypes and vocabulary sizes are checked from the "
                        f"local cache")
    return report
