"""``merge-study merge``: one merge of named checkpoints (or a mergekit configuration) into a model directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from study.cli_app import ZooOpt, app, friendly
from study.errors import UserError


def _parse_set(items: List[str], n_models: int) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as method parameters; a comma list is one value per model."""
    import yaml

    from study.config import resolve_value

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        if key in params:
            raise UserError(f"--set {key} is given twice: give each parameter once")
        parts = [p.strip() for p in raw.split(",")] if "," in raw else [raw]
        try:
            values = [resolve_value(yaml.safe_load(p) if p else p, n_models) for p in parts]
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: {raw!r} is not a value (a number, true/false, a word, or "
                            f"a comma list with one per --model)") from None
        params[key] = values if len(values) > 1 else values[0]
    return params


def _check_device(device: str) -> None:
    """A merge device that exists here, before any tensor is read."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {device}: no such CUDA device on this machine; use --device cpu")


ModelOpt = typer.Option(None, "--model", metavar="MODEL",
                        help="a checkpoint to merge, named as --base is (repeat for each)")


@app.command()
@friendly
def merge(
    method: Optional[str] = typer.Option(None, "--method", metavar="NAME",
                                         help="a name from `merge-study methods`, mergekit:<name> or peft:<type>"),
    base: Optional[str] = typer.Option(None, "--base", metavar="MODEL",
                                       help="base model: a directory, zoo:NAME or a hub id already in the local "
                                            "cache (required by methods that merge task vectors)"),
    model: Optional[List[str]] = ModelOpt,
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="a method parameter; a per-model value is a comma list in "
                                                  "--model order (repeatable)"),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="output Hugging Face model directory (a new one)"),
    force: bool = typer.Option(False, "--force", help="replace --out when it holds a previous merge (never any "
                                                      "other directory)"),
    device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu, cuda or cuda:N"),
    vocab_mismatch: str = typer.Option("refuse", "--vocab-mismatch", metavar="MODE",
                                       help="refuse | truncate extra embedding rows"),
    zoo: Optional[Path] = ZooOpt,
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE.yml",
                                          help="a mergekit configuration instead of --method/--base/--model/--set "
                                               "(native when it maps onto a native method, else run by mergekit)"),
) -> None:
    """Merge checkpoints into a Hugging Face model directory that AutoModelForCausalLM loads.

    Example: merge-study merge --method task_arithmetic --base zoo:base --model zoo:add --model zoo:sub
    --out merged/ta
    """
    from study.checkpoints import model_dir
    from study.errors import NotApplicable
    from study.merge import open_inputs, write_merged
    from study.methods.registry import check_name, get_method

    if config is not None:
        given = [flag for flag, value in (("--method", method), ("--base", base), ("--model", model), ("--set", set_),
                                          ("--vocab-mismatch", vocab_mismatch != "refuse")) if value]
        if given:
            raise UserError(f"--config cannot be combined with {', '.join(given)}: the configuration names the "
                            f"method, models and parameters")
        _merge_config(config, out, force, device, zoo)
        return
    if method is None or not model:
        raise UserError("merge needs --method and at least one --model (or a mergekit --config FILE.yml)")
    check_name(method)
    info = get_method(method)
    if vocab_mismatch not in ("refuse", "truncate"):
        raise UserError(f"--vocab-mismatch {vocab_mismatch!r}: expected refuse or truncate")
    if info.needs_base and base is None:
        raise UserError(f"method {method!r} needs --base (it merges task vectors θᵢ − θ₀)")
    try:
        info.check_k(len(model))
    except NotApplicable as exc:
        raise UserError(f"method {method!r} cannot merge {len(model)} model(s): {exc}") from None
    params = info.resolve_params(_parse_set(set_ or [], len(model)), n_models=len(model))
    base_dir = model_dir(base, zoo) if base is not None else None
    model_dirs = [model_dir(m, zoo) for m in model]
    _check_device(device)
    if base_dir is not None:
        from study.compat import check_compatible

        check_compatible(base_dir, model_dirs, vocab_mismatch=vocab_mismatch)
    inputs = open_inputs(base_dir, model_dirs, device=device, vocab_mismatch=vocab_mismatch)
    t0 = time.perf_counter()
    write_merged(inputs, info, params, out, force=force,
                 metadata={"method": method, "params": params, "base": base, "models": list(model),
                           "base_dir": str(base_dir) if base_dir else None, "model_dirs": [str(d) for d in model_dirs]})
    typer.echo(f"wrote {out} ({method}, {len(model)} models, {time.perf_counter() - t0:.1f} s)")


def _merge_config(config: Path, out: Path, force: bool, device: str, zoo: Optional[Path]) -> None:
    """``merge --config``: a mergekit configuration, run natively when it maps onto a native method."""
    from study.mergekit_config import merge_config, plan_config

    _check_device(device)
    plan = plan_config(config, device=device, zoo_root=zoo)
    t0 = time.perf_counter()
    merge_config(plan, out, force=force, device=device)
    how = "native " + plan.native.method if plan.native is not None else f"mergekit ({plan.reason})"
    typer.echo(f"wrote {out} ({plan.config.merge_method} from {config}, {how}, {time.perf_counter() - t0:.1f} s)")


