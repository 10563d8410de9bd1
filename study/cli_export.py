"""``merge-study export`` (a scored merge as a model directory with a model card, optionally pushed to the hub)
and ``merge-study export-results`` (lm-eval's own result files of a sweep's cells, laid out as lm-eval does)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from study.cli_app import StoreOpt, SweepArg, ZooOpt, app, friendly
from study.errors import UserError


@app.command()
@friendly
def export(
    sweep: Path = SweepArg,
    cell: str = typer.Argument(..., metavar="CELL", help="the cell's id, or a unique prefix of at least 6 characters "
                                                         "(the cell_id column of the report's scores.parquet)"),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="output Hugging Face model directory (a new one)"),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", metavar="REPO",
                                              help="then upload DIR to this hub model repository (created if "
                                                   "missing; NAME alone: your namespace)"),
    private: bool = typer.Option(False, "--private", help="with --push-to-hub: create the repository private"),
    force: bool = typer.Option(False, "--force", help="replace --out when it holds a previous export (never any "
                                                      "other directory)"),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE",
                                         help="merge device [default: the one the cell merged on, from its record]"),
    store: Optional[Path] = StoreOpt,
    zoo: Optional[Path] = ZooOpt,
) -> None:
    """Merge a scored cell again, bit for bit, into a model directory with a model card (README.md).

    Example: merge-study export sweeps/smoke.yaml 3f2a9c01 --out exported/best --push-to-hub me/best-merge
    """
    from study.export import export_cell, find_cell, push, push_target
    from study.prepare import prepare
    from study.store import Store

    ctx = prepare(sweep, zoo_root=zoo)
    st = Store(store if store is not None else Path("results") / ctx.sweep.name, create=False)
    chosen = find_cell(ctx.plan, cell)
    repo = push_target(push_to_hub) if push_to_hub else None  # a token the hub refuses fails before the merge
    t0 = time.perf_counter()
    done = export_cell(ctx, st, chosen, out, force=force, device=device)
    for note in done.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {out} ({chosen.describe()}, merged on {done.device}, mergekit equivalent: {done.mergekit}; "
               f"{time.perf_counter() - t0:.1f} s)")
    if repo:
        typer.echo(f"pushed {out} to {repo}: {push(out, repo, private=private)}")


@app.command("export-results")
@friendly
def export_results(
    sweep: Optional[Path] = typer.Argument(None, metavar="[SWEEP]", help="sweep YAML file [default with --store: "
                                                                          "the plan stored by the last run]"),
    out: Path = typer.Option(..., "--out", metavar="DIR",
                             help="a new directory, or an lm-eval output directory to add to"),
    store: Optional[Path] = StoreOpt,
    zoo: Optional[Path] = ZooOpt,
) -> None:
    """lm-eval's results_*.json and samples_*.jsonl of every done cell, as `lm-eval --output_path DIR
    --log_samples` lays them out (one directory per model)."""
    from study.cli import _open_existing
    from study.lm_eval_files import export_results as write

    ctx, st = _open_existing(sweep, store, zoo)
    summary = write(st, ctx.plan.unique_cells(), out)
    if summary.without_files:
        typer.echo(f"{summary.without_files} done cell(s) have no lm-eval files (scored by a merge-study that did "
                   f"not keep them): run the sweep into a new --store to get theirs", err=True)
    if not summary.written:
        raise UserError(f"no cell of {ctx.sweep.name} has lm-eval files to export ({summary.not_done} not done, "
                        f"{summary.without_files} without files)")
    n_files = sum(len(paths) for paths in summary.written.values())
    pending = f"; {summary.not_done} cell(s) not done are left out" if summary.not_done else ""
    typer.echo(f"wrote {n_files} files for {len(summary.written)} models under {out}{pending}")
