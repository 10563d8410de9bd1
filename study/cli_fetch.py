"""``merge-study fetch``: download every hub model a sweep names, after checking each on the hub; and the hub
checks ``merge-study validate`` runs first (``hub_checks``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from study.cli_app import SweepArg, ZooOpt, app, friendly
from study.errors import UserError

if TYPE_CHECKING:
    from study.config import Sweep
    from study.hub.checks import HubReport
    from study.hub.lock import ModelsLock

LockStoreOpt = typer.Option(None, "--store", metavar="DIR", help="the sweep's result store, where models.lock.json "
                                                                 "is kept [default: results/<sweep name>]")


def _show(report: "HubReport") -> None:
    if report.online:
        n_tensors = sum(len(m.tensors) for m in report.models.values())
        typer.echo(f"hub: {len(report.models)} model(s) checked at {report.endpoint}: access, configs and "
                   f"{n_tensors} tensor shapes and dtypes against their base (safetensors headers only, no weights), "
                   f"vocabulary sizes, lineage by model card")
    for line in report.notes:
        typer.echo(f"note: {line}")
    for line in report.warnings:
        typer.echo(f"warning: {line}", err=True)


def _raise_errors(sweep: Path, errors: list[str], after: str = "") -> None:
    """One problem is the command's one error line; several are listed, one line each, before a summary."""
    if len(errors) == 1:
        raise UserError(f"{sweep}: {errors[0]}{after}")
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    raise UserError(f"{sweep}: {len(errors)} problems with the sweep's hub models (listed above){after}")


def _check(sw: "Sweep", zoo: Optional[Path], store: Optional[Path], *,
           update: bool = False) -> "tuple[HubReport, Path, ModelsLock | None]":
    """The sweep's hub check report (notes and warnings printed), its lock file's path and the lock it holds."""
    from study.hub.checks import check_sweep
    from study.hub.lock import lock_path, read_lock

    lock_file = lock_path(store, sw.name)
    lock = read_lock(lock_file)
    report = check_sweep(sw, zoo_root=zoo, lock=None if update else lock)
    _show(report)
    return report, lock_file, lock


def hub_checks(sweep: Path, zoo: Optional[Path] = None, store: Optional[Path] = None) -> bool:
    """``validate``'s hub step: check the sweep's hub models before any download. True when ``prepare`` should
    follow (no hub model, offline, or all of them in the cache); False when some are not downloaded yet, after
    checking the methods and tasks and saying to fetch them."""
    from study.config import load_sweep
    from study.hub.checks import hub_refs

    sw = load_sweep(sweep)
    if not hub_refs(sw):
        return True
    from study.hub.fetch import plan_fetch, size_text

    report, _, _ = _check(sw, zoo, store)
    if report.errors:
        _raise_errors(sweep, report.errors)
    if not report.online:
        return True
    pending = plan_fetch(report).pending
    if not pending:
        return True
    from study.evaluate import resolve_tasks
    from study.prepare import check_methods

    try:
        check_methods(sw)
        resolve_tasks(sw.evaluation.tasks, zoo)
    except UserError as exc:
        raise type(exc)(f"{sweep}: {exc}") from None
    size = size_text(sum(t.missing_bytes for t in pending))
    typer.echo(f"{sweep}: checks passed; {len(pending)} of {len(report.models)} hub model(s) not in the local cache "
               f"yet ({size}): `merge-study fetch {sweep}`")
    return False


@app.command()
@friendly
def fetch(
    sweep: Path = SweepArg,
    store: Optional[Path] = LockStoreOpt,
    update: bool = typer.Option(False, "--update", help="ignore the commits models.lock.json pins: take each "
                                                        "model's revision as the sweep names it now, and pin that"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check and print what would be downloaded; download nothing"),
    zoo: Optional[Path] = ZooOpt,
) -> None:
    """Download every hub model SWEEP names into the local Hugging Face cache (weights, configs, tokenizer files
    only), after checking each on the hub: it exists and is readable, its config and every tensor's shape and dtype
    fit its base (from safetensors headers: no weight file is read), vocabulary sizes, lineage by model card.
    Commits are pinned in <store>/models.lock.json; a second fetch resumes, and `run` never downloads."""
    from study.config import load_sweep
    from study.hub.checks import hub_refs
    from study.hub.client import HubUnreachable, offline
    from study.hub.fetch import check_disk, download, free_bytes, plan_fetch, size_text
    from study.hub.lock import ModelsLock

    t0 = time.perf_counter()
    sw = load_sweep(sweep)
    if not hub_refs(sw):
        typer.echo(f"{sweep}: names no hub model: nothing to fetch")
        return
    if offline():
        raise UserError("fetch needs the hub, and HF_HUB_OFFLINE is set: unset it to fetch (`merge-study validate` "
                        "checks offline, from the local cache)")
    report, lock_file, lock = _check(sw, zoo, store, update=update)
    if not report.online:
        raise HubUnreachable(f"{report.reason}: check the network and HF_ENDPOINT; nothing was downloaded")
    if report.errors:
        _raise_errors(sweep, report.errors, "; nothing was downloaded")
    plan = plan_fetch(report)
    pending = plan.pending
    need = plan.download_bytes
    typer.echo(f"fetch: {len(plan.tasks)} model(s), {size_text(plan.total_bytes)}: {size_text(need)} to download "
               f"in {sum(len(t.missing) for t in pending)} file(s), {size_text(free_bytes(Path(plan.cache)))} free "
               f"in {plan.cache}")
    if dry_run:
        for task in pending:
            typer.echo(f"  {task.model.label} @ {task.model.commit[:12]}: {len(task.missing)} file(s), "
                       f"{size_text(task.missing_bytes)}")
        return
    check_disk(plan)
    base = lock if lock is not None and not update else None
    new = ModelsLock(sweep=sw.name, endpoint=report.endpoint,
                     models={k: v for k, v in (base.models if base else {}).items() if k in report.models})
    download(plan, report, new, lock_file, typer.echo)
    typer.echo(f"fetched {len(plan.tasks)} model(s) ({size_text(need)} downloaded) in "
               f"{time.perf_counter() - t0:.1f} s; commits pinned in {lock_file}")
