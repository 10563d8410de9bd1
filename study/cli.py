"""The ``merge-study`` command line (docs/architecture.md §CLI contract; scripts and tests rely on it).

Imports are lazy so that ``--help``, ``methods`` and ``validate`` start fast. A ``UserError`` is printed as
one line and exits with status 2 (the traceback only with ``--verbose``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from study.cli_app import ArchOpt, FamilyOpt, StoreOpt, SweepArg, ZooOpt, app, friendly, zoo_app
from study.errors import UserError


def _store_dir(store: Optional[Path], name: str) -> Path:
    return store if store is not None else Path("results") / name


OptSweepArg = typer.Argument(None, help="sweep YAML file [default with --store: the plan stored by the last run]")


def _open_existing(sweep: Optional[Path], store: Optional[Path], zoo: Optional[Path]):
    """An existing store (nothing is created) and the plan to read it with: the sweep file's when it can be
    planned here, else the one the store keeps; notes on what changed go to stderr."""
    from study.prepare import context_for
    from study.store import Store

    if store is None:
        if sweep is None:
            raise UserError("give a SWEEP file or --store DIR")
        from study.config import load_sweep

        store = _store_dir(None, load_sweep(sweep).name)
    st = Store(store, create=False)
    ctx, notes = context_for(sweep, st, zoo)
    for line in notes:
        typer.echo(line, err=True)
    return ctx, st


@app.command()
@friendly
def run(
    sweep: Path = SweepArg,
    executor: Optional[str] = typer.Option(None, "--executor", help="local | pool | slurm [default: the sweep's executor.kind]"),
    store: Optional[Path] = StoreOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print the plan; compute nothing"),
    wait: bool = typer.Option(False, "--wait", help="slurm: follow the jobs until they finish"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="recompute cells recorded as failed"),
    device: Optional[str] = typer.Option(None, "--device", help="merge device (cpu, cuda, cuda:1) [default: the sweep's merge.device]"),
    zoo: Optional[Path] = ZooOpt,
    wandb: Optional[bool] = typer.Option(None, "--wandb/--no-wandb", help="log to Weights & Biases, offline unless the mode says online (the wandb extra) [default: the sweep's logging.wandb]"),
    wandb_project: Optional[str] = typer.Option(None, "--wandb-project", metavar="P", help="W&B project (implies --wandb) [default: the sweep's, else merge-study]"),
) -> None:
    """Run every cell of SWEEP that the store does not hold yet (resumable; a re-run redoes nothing)."""
    from study.executors import get_executor
    from study.prepare import prepare, replaced_plan_changes, save_plan
    from study.store import Store

    t0 = time.perf_counter()
    ctx = prepare(sweep, zoo_root=zoo, device=device)
    kind = executor or ctx.sweep.executor.kind
    try:
        chosen = get_executor(kind)
        _check_backend(ctx.sweep.evaluation.backend, kind)
    except UserError as exc:
        raise UserError(f"{sweep}: {exc}") from None
    from study.tracking_wandb import sweep_tracking, wandb_settings

    tracking = wandb_settings(ctx.sweep, wandb, wandb_project)
    root = _store_dir(store, ctx.sweep.name)
    cells = ctx.plan.unique_cells()
    if dry_run:
        for c in ctx.plan.cells:
            typer.echo(f"{c.cell_id}  {c.describe()}" + (f"  [not applicable: {c.not_applicable}]" if c.not_applicable else ""))
        typer.echo(f"{len(cells)} cells ({len(ctx.plan.cells)} planned), store {root}")
        return
    st = Store(root)  # only once every check passed: a bad input writes nothing
    for line in replaced_plan_changes(ctx, st):
        typer.echo(line, err=True)
    save_plan(ctx, st)
    with sweep_tracking(tracking, ctx, st):
        summary = chosen.run(ctx, st, retry_failed=retry_failed, wait=wait)
    if summary.submitted:
        typer.echo(f"submitted Slurm job(s): {' '.join(summary.submitted)}")
    typer.echo(summary.line())
    typer.echo(f"store: {st.root}  ({time.perf_counter() - t0:.1f} s)")


def _check_backend(backend: str, executor: str) -> None:
    """vLLM must be importable where the cells run: a local or pool run checks it here; a login node submitting
    to Slurm may lack it, so a Slurm run does not."""
    import importlib.util

    if backend == "vllm" and executor != "slurm" and importlib.util.find_spec("vllm") is None:
        raise UserError("evaluation.backend is vllm but vllm is not installed here: install the `vllm` extra on a "
                        "GPU machine, run `bash scripts/vllm_env.sh` on a CPU with AVX-512, or use backend: hf")


def store_counts(ctx: Any, st: Any) -> dict[str, int]:
    """Unique planned cells per record status (``pending``: no record yet), and their total."""
    from study.record import Outcome

    counts = {str(o): 0 for o in (Outcome.DONE, Outcome.FAILED, Outcome.PENDING, Outcome.NOT_APPLICABLE)}
    for cell in ctx.plan.unique_cells():
        counts[st.status(cell.cell_id)] += 1
    return {**counts, "total": sum(counts.values())}


@app.command()
@friendly
def status(sweep: Optional[Path] = OptSweepArg, store: Optional[Path] = StoreOpt,
           as_json: bool = typer.Option(False, "--json"), zoo: Optional[Path] = ZooOpt) -> None:
    """Counts of done / failed / pending / not-applicable cells; failed cells with their one-line reason."""
    from study.record import Outcome

    ctx, st = _open_existing(sweep, store, zoo)
    counts = store_counts(ctx, st)
    slurm_states = _slurm_states(st)
    if as_json:
        out: dict[str, Any] = dict(counts)
        if slurm_states:
            out["slurm"] = slurm_states
        typer.echo(json.dumps(out))
        return
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()))
    for cell in ctx.plan.unique_cells():
        rec = st.get(cell.cell_id)
        if rec is not None and rec.status == Outcome.FAILED:
            typer.echo(f"  failed {cell.describe()}: {rec.error}")
    if slurm_states:
        typer.echo("slurm: " + " ".join(f"{k}={v}" for k, v in sorted(slurm_states.items())))


def _slurm_states(st: Any) -> dict[str, int]:
    """Slurm job states of this store's submitted jobs (empty when none were submitted)."""
    if not (st.root / "slurm").exists():
        return {}
    try:
        from study.executors.slurm import slurm_states
    except ImportError:
        return {}
    return slurm_states(st)


@app.command()
@friendly
def cancel(sweep: Path = SweepArg, store: Optional[Path] = StoreOpt, zoo: Optional[Path] = ZooOpt) -> None:
    """Cancel the sweep's Slurm jobs; finished cells stay in the store and a later `run` completes the rest."""
    from study.config import load_sweep
    from study.store import Store

    sw = load_sweep(sweep)
    st = Store(_store_dir(store, sw.name), create=False)
    try:
        from study.executors.slurm import cancel_jobs
    except ImportError as exc:
        raise UserError(f"cannot cancel: the slurm executor is not available ({exc})") from None
    cancelled = cancel_jobs(st)
    typer.echo(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled)}" if cancelled else "no jobs to cancel")


@app.command("verify-store")
@friendly
def verify_store(store: Path = typer.Option(..., "--store", help="result store directory")) -> None:
    """Check every record's checksum; corrupt records are listed (exit 1) and recomputed by the next run."""
    from study.store import Store

    st = Store(store, create=False)
    problems = st.verify()
    n = len(st.record_paths())
    for path, what in problems:
        typer.echo(f"{path}: {what}")
    typer.echo(f"{n} records, {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)


@app.command()
@friendly
def report(sweep: Optional[Path] = OptSweepArg, store: Optional[Path] = StoreOpt,
           out: Optional[Path] = typer.Option(None, "--out", help="output directory [default: paper/<sweep name>]"),
           zoo: Optional[Path] = ZooOpt,
           wandb: Optional[bool] = typer.Option(None, "--wandb/--no-wandb", help="log summary.csv and the figures to the sweep's W&B run [default: when the store logs to one (wandb.json) or the sweep asks]")) -> None:
    """Tables, figures and report.md regenerated entirely from the store."""
    from study.analysis.report import write_report
    from study.tracking_wandb import log_report, report_settings

    ctx, st = _open_existing(sweep, store, zoo)
    out_dir = out if out is not None else Path("paper") / ctx.sweep.name
    tracking = report_settings(ctx.sweep, st, wandb)
    written = write_report(ctx, st, out_dir)
    log_report(tracking, ctx, st, out_dir, written)
    for path in written:
        typer.echo(str(path))


@app.command()
@friendly
def methods(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every registered method with its parameters, defaults, applicable k and reference."""
    from study.fusion.registry import describe_fusion_methods, format_fusion_methods
    from study.methods.describe import describe_methods, format_methods

    fusion = [{**m, "name": f"fusion:{m['name']}", "kind": "fusion"} for m in describe_fusion_methods()]
    typer.echo(json.dumps(describe_methods() + fusion, indent=1) if as_json
               else format_methods() + "\n" + format_fusion_methods())


@app.command()
@friendly
def validate(sweep: Path = SweepArg, zoo: Optional[Path] = ZooOpt, store: Optional[Path] = StoreOpt) -> None:
    """Every early check (schema, methods, parameters, checkpoints, tasks), no heavy work. Hub models are checked
    on the hub first (existence, access, shapes and dtypes from headers, lineage; no download), or offline from the
    local cache; --store is where `fetch` keeps models.lock.json."""
    from study.cli_fetch import hub_checks
    from study.prepare import prepare

    if not hub_checks(sweep, zoo, store):
        return
    ctx = prepare(sweep, zoo_root=zoo)
    n = len(ctx.plan.unique_cells())
    fusion = f", {len(ctx.sweep.fusion)} fusion method(s)" if ctx.sweep.fusion else ""
    typer.echo(f"{sweep}: ok ({len(ctx.sweep.bases)} base(s), {len(ctx.sweep.methods)} method(s){fusion}, {n} cells)")


@zoo_app.command("build")
@friendly
def zoo_build(out: Optional[Path] = typer.Option(None, "--zoo", "--out", metavar="DIR",
                                                 help="zoo root [default: $MERGE_STUDY_ZOO or ~/.cache/merge-study/zoo]"),
              arch: str = ArchOpt, family: str = FamilyOpt) -> None:
    """Build the mini zoo (cached by content hash: a second call is a no-op)."""
    from study.zoo import build_zoo
    from study.zoo.family import get_family

    build_zoo(out, arch=arch, family=get_family(family).name)  # prints its own progress and one-line summary


@zoo_app.command("list")
@friendly
def zoo_list(zoo: Optional[Path] = ZooOpt, arch: str = ArchOpt, family: str = FamilyOpt) -> None:
    """Where the zoo lives and how it was built; its models (with the skill and task of each) and tasks."""
    from study.zoo.catalog import zoo_listing
    from study.zoo.model import check_arch

    typer.echo(zoo_listing(zoo, arch=check_arch(arch), family=family))


@zoo_app.command("path")
@friendly
def zoo_path(name: Optional[str] = typer.Argument(None, metavar="NAME",
                                                  help="a model (base, add, ... or zoo:add) [default: the zoo itself]"),
             zoo: Optional[Path] = ZooOpt, arch: str = ArchOpt, family: str = FamilyOpt) -> None:
    """Print the built zoo's directory, or a model's: one line, for scripts (`ls $(merge-study zoo path add)`)."""
    from study.zoo import load_zoo

    built = load_zoo(zoo, arch=arch, family=family)
    typer.echo(str(built.model(name) if name is not None else built.path))


from study import cli_merge  # noqa: E402,F401  (registers `merge`)
from study import cli_fetch  # noqa: E402,F401  (registers `fetch`)
from study import cli_export  # noqa: E402,F401  (registers `export`, `export-results`)


def main() -> None:
    app(prog_name="merge-study")


if __name__ == "__main__":
    sys.exit(main())
