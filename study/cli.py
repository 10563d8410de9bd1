"""The ``merge-study`` command line (architecture.md §CLI contract; scripts and tests rely on it).

Imports are lazy so that ``--help``, ``methods`` and ``validate`` start fast. A ``UserError`` is printed as
one line and exits with status 2 (the traceback only with ``--verbose``).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from study.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible model-merging studies: plan a sweep, merge, evaluate with lm-eval, report.")
zoo_app = typer.Typer(no_args_is_help=True, help="The mini zoo: a tiny base model and task experts built locally.")
app.add_typer(zoo_app, name="zoo")

_VERBOSE = {"on": False}

SweepArg = typer.Argument(..., help="sweep YAML file (see sweeps/ and README 'What a sweep file looks like')")
StoreOpt = typer.Option(None, "--store", help="result store directory [default: results/<sweep name>]")
ZooOpt = typer.Option(None, "--zoo", help="mini zoo root [default: $MERGE_STUDY_ZOO or ~/.cache/merge-study/zoo]")


def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``UserError`` into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if _VERBOSE["on"]:
                raise
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="full tracebacks for errors"),
          plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="import merge methods from this module")) -> None:
    _VERBOSE["on"] = verbose
    if plugin:
        from study.methods.registry import register_module

        for module in plugin:
            register_module(module)


def _store_dir(store: Optional[Path], name: str) -> Path:
    return store if store is not None else Path("results") / name


def _open(sweep: Path, store: Optional[Path], zoo: Optional[Path], **kw: Any):
    from study.runner import prepare
    from study.store import Store

    ctx = prepare(sweep, zoo_root=zoo, **kw)
    return ctx, Store(_store_dir(store, ctx.sweep.name))


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
) -> None:
    """Run every cell of SWEEP that the store does not hold yet (resumable; a re-run redoes nothing)."""
    from study.executors import get_executor
    from study.runner import save_plan

    from study.runner import prepare
    from study.store import Store

    t0 = time.perf_counter()
    ctx = prepare(sweep, zoo_root=zoo, device=device)
    kind = executor or ctx.sweep.executor.kind
    try:
        chosen = get_executor(kind)
        _check_backend(ctx.sweep.evaluation.backend, kind)
    except UserError as exc:
        raise UserError(f"{sweep}: {exc}") from None
    st = Store(_store_dir(store, ctx.sweep.name))  # only once every check passed: a bad input writes nothing
    cells = ctx.plan.unique_cells()
    if dry_run:
        for c in ctx.plan.cells:
            typer.echo(f"{c.cell_id}  {c.describe()}" + (f"  [not applicable: {c.not_applicable}]" if c.not_applicable else ""))
        typer.echo(f"{len(cells)} cells ({len(ctx.plan.cells)} planned), store {st.root}")
        return
    save_plan(ctx, st)
    summary = chosen.run(ctx, st, retry_failed=retry_failed, wait=wait)
    if summary.submitted:
        typer.echo(f"submitted Slurm job(s): {' '.join(summary.submitted)}")
    typer.echo(summary.line())
    typer.echo(f"store: {st.root}  ({time.perf_counter() - t0:.1f} s)")


def _check_backend(backend: str, executor: str) -> None:
    """vLLM runs on GPU machines only; here (or on a login node submitting to Slurm) it must be importable
    where the cells run, so only a local or pool run checks it."""
    import importlib.util

    if backend == "vllm" and executor != "slurm" and importlib.util.find_spec("vllm") is None:
        raise UserError("evaluation.backend is vllm but vllm is not installed here: install the `vllm` extra on a "
                        "GPU machine, or use backend: hf")


def store_counts(ctx: Any, st: Any) -> dict[str, int]:
    from study.store import DONE, FAILED, NOT_APPLICABLE

    counts = {"done": 0, "failed": 0, "pending": 0, "not_applicable": 0, "total": 0}
    for cell in ctx.plan.unique_cells():
        status = st.status(cell.cell_id)
        key = {DONE: "done", FAILED: "failed", NOT_APPLICABLE: "not_applicable"}.get(status or "", "pending")
        counts[key] += 1
        counts["total"] += 1
    return counts


@app.command()
@friendly
def status(sweep: Path = SweepArg, store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json"),
           zoo: Optional[Path] = ZooOpt) -> None:
    """Counts of done / failed / pending / not-applicable cells; failed cells with their one-line reason."""
    ctx, st = _open(sweep, store, zoo, check_compat=False)
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
        if rec and rec["status"] == "failed":
            typer.echo(f"  failed {cell.describe()}: {rec.get('error')}")
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
    """Cancel the sweep's Slurm jobs; finished cells stay in the store and a later ``run`` completes the rest."""
    from study.config import load_sweep
    from study.store import Store

    sw = load_sweep(sweep)
    st = Store(_store_dir(store, sw.name))
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

    if not store.is_dir():
        raise UserError(f"{store}: no such store directory")
    problems = Store(store).verify()
    n = sum(1 for _ in (store / "records").glob("*/*.json"))
    for path, what in problems:
        typer.echo(f"{path}: {what}")
    typer.echo(f"{n} records, {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)


@app.command()
@friendly
def report(sweep: Path = SweepArg, store: Optional[Path] = StoreOpt,
           out: Optional[Path] = typer.Option(None, "--out", help="output directory [default: paper/<sweep name>]"),
           zoo: Optional[Path] = ZooOpt) -> None:
    """Tables, figures and report.md regenerated entirely from the store."""
    from study.analysis.report import write_report

    ctx, st = _open(sweep, store, zoo, check_compat=False)
    out_dir = out if out is not None else Path("paper") / ctx.sweep.name
    written = write_report(ctx, st, out_dir)
    for path in written:
        typer.echo(str(path))


def _parse_set(items: List[str], n_models: int) -> dict[str, Any]:
    import yaml

    from study.config import resolve_value

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        parts = [p.strip() for p in raw.split(",")] if "," in raw else [raw]
        values = [resolve_value(yaml.safe_load(p) if p else p, n_models) for p in parts]
        params[key.strip()] = values if len(values) > 1 else values[0]
    return params


@app.command()
@friendly
def merge(
    method: str = typer.Option(..., "--method", help="a name from `merge-study methods`, mergekit:<name> or peft:<type>"),
    base: Optional[Path] = typer.Option(None, "--base", help="base model directory (required by methods that use task vectors)"),
    model: List[Path] = typer.Option(..., "--model", help="a checkpoint directory (repeat for each)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE; a per-model value is a comma list in --model order"),
    out: Path = typer.Option(..., "--out", help="output Hugging Face model directory"),
    device: str = typer.Option("cpu", "--device"),
    vocab_mismatch: str = typer.Option("refuse", "--vocab-mismatch", help="refuse | truncate extra embedding rows"),
) -> None:
    """Merge checkpoints into a Hugging Face model directory that AutoModelForCausalLM loads."""
    from study.merge import open_inputs, write_merged
    from study.methods.registry import check_name, get_method

    check_name(method)
    info = get_method(method)
    if info.needs_base and base is None:
        raise UserError(f"method {method!r} needs --base (it merges task vectors θᵢ − θ₀)")
    info.check_k(len(model)) if len(model) else None
    params = info.resolve_params(_parse_set(set_ or [], len(model)), n_models=len(model))
    if base is not None:
        from study.compat import check_compatible

        check_compatible(base, list(model), vocab_mismatch=vocab_mismatch)
    inputs = open_inputs(base, list(model), device=device, vocab_mismatch=vocab_mismatch)
    t0 = time.perf_counter()
    write_merged(inputs, info, params, out, metadata={"method": method, "params": params,
                                                     "base": str(base), "models": [str(m) for m in model]})
    typer.echo(f"wrote {out} ({method}, {len(model)} models, {time.perf_counter() - t0:.1f} s)")


@app.command()
@friendly
def methods(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every registered method with its parameters, defaults, applicable k and reference."""
    from study.methods.describe import describe_methods, format_methods

    typer.echo(json.dumps(describe_methods(), indent=1) if as_json else format_methods())


@app.command()
@friendly
def validate(sweep: Path = SweepArg, zoo: Optional[Path] = ZooOpt) -> None:
    """Every early check (schema, methods, parameters, checkpoints, tasks), no heavy work."""
    from study.runner import prepare

    ctx = prepare(sweep, zoo_root=zoo)
    n = len(ctx.plan.unique_cells())
    typer.echo(f"{sweep}: ok ({len(ctx.sweep.bases)} base(s), {len(ctx.sweep.methods)} method(s), {n} cells)")


@zoo_app.command("build")
@friendly
def zoo_build(out: Optional[Path] = typer.Option(None, "--out", help="zoo root directory"),
              arch: str = typer.Option("llama", "--arch", help="llama | qwen3")) -> None:
    """Build the mini zoo (cached by content hash: a second call is a no-op)."""
    from study.zoo import build_zoo

    build_zoo(out, arch=arch)  # prints its own progress and one-line summary


def main() -> None:
    app(prog_name="merge-study")


if __name__ == "__main__":
    sys.exit(main())
