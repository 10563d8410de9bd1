"""``mergekit:<name>``: any mergekit merge method, configured from the cell's parameters.

The parameter schema is mergekit's own (``MergeMethodSpec.parameters``): per-input and non-base parameters
become per-model lists, shared ones global; a required ``weight`` defaults to 1.0 and a required ``t`` to 0.5
(our ``slerp``'s). Applicable k comes from the method's input contract (inputs counted without the base when
the base is required). The merge runs in float32 (``dtype``) and is written in the base's dtype
(``out_dtype``), through ``MergeConfiguration.model_validate`` and ``run_merge`` with
``MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=0)`` — the API measured to match the
CLI bit for bit. A LoRA-adapter checkpoint is given to mergekit as ``base+adapter``, which mergekit merges
into the base before merging.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from study.adapters import not_per_tensor
from study.errors import MethodError
from study.lora import is_lora_dir
from study.methods.schema import MethodInfo, Param
from study.tensors import SafetensorsSource, storage_dtype

REQUIRED_DEFAULTS = {"weight": 1.0, "t": 0.5}
_SIMPLE_TYPES = (bool, int, float, str)


def _param(spec: Any) -> Param | None:
    from mergekit.merge_methods.base import ParameterScope

    value_type = spec.value_type
    if typing.get_origin(value_type) is typing.Union:
        args = [a for a in typing.get_args(value_type) if a is not type(None)]
        value_type = args[0] if len(args) == 1 else str
    if value_type not in _SIMPLE_TYPES:
        return None
    default = REQUIRED_DEFAULTS.get(spec.name) if spec.required else spec.default
    if default is None:
        return None
    return Param(
        name=spec.name,
        type=value_type,
        default=default,
        per_model=spec.scope is not ParameterScope.SHARED,
        help=spec.description or "",
    )


def mergekit_method(name: str, inner: str) -> MethodInfo:
    """The schema and runner of ``mergekit:<inner>``."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import BasePolicy

    try:
        method = registry.get(inner)
    except Exception:
        known = ", ".join(sorted(m.spec.name for m in registry.registered_methods()))
        raise MethodError(f"method {name!r}: mergekit has no merge method {inner!r} (known: {known})") from None
    spec = method.spec
    contract = spec.contract
    uses_base = contract.base is not BasePolicy.IGNORED
    counted_base = 1 if contract.base is BasePolicy.REQUIRED else 0
    min_k = max(1, contract.min_inputs - counted_base, contract.min_non_base or 1)
    max_k = None if contract.max_inputs is None else contract.max_inputs - counted_base
    if contract.max_non_base is not None:
        max_k = contract.max_non_base if max_k is None else min(max_k, contract.max_non_base)
    params = tuple(p for p in (_param(s) for s in spec.parameters) if p is not None)

    def run(base_dir: Path, checkpoint_dirs: list[Path], resolved: dict[str, Any], out_dir: Path) -> None:
        run_mergekit(inner, base_dir if uses_base else None, base_dir, checkpoint_dirs, resolved, params, out_dir)

    return MethodInfo(
        name=name,
        fn=not_per_tensor,
        params=params,
        reference=f"mergekit {spec.pretty_name or inner}" + (f", {spec.reference_url}" if spec.reference_url else ""),
        summary=f"mergekit's {inner} merge method, run through its Python API",
        needs_base=uses_base,
        min_k=min_k,
        max_k=max_k,
        whole_model=run,
    )


def _model_ref(path: Path, base_dir: Path) -> str:
    if is_lora_dir(path):
        return f"{base_dir}+{path}"
    return str(path)


def mergekit_config(
    method: str,
    base_model: Path | None,
    layout_dir: Path,
    checkpoint_dirs: list[Path],
    resolved: dict[str, Any],
    params: tuple[Param, ...],
) -> dict[str, Any]:
    """The mergekit YAML (as a dict) for one cell."""
    per_model = {p.name for p in params if p.per_model}
    models = [
        {
            "model": _model_ref(Path(c), layout_dir),
            "parameters": {k: resolved[k][i] for k in per_model if k in resolved},
        }
        for i, c in enumerate(checkpoint_dirs)
    ]
    config: dict[str, Any] = {
        "merge_method": method,
        "models": models,
        "parameters": {k: v for k, v in resolved.items() if k not in per_model},
        "dtype": "float32",
        "out_dtype": storage_dtype(SafetensorsSource(layout_dir)),
    }
    if base_model is not None:
        config["base_model"] = str(base_model)
    return config


def run_mergekit(
    method: str,
    base_model: Path | None,
    layout_dir: Path,
    checkpoint_dirs: list[Path],
    resolved: dict[str, Any],
    params: tuple[Param, ...],
    out_dir: Path,
) -> None:
    """Run one mergekit merge into ``out_dir``."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate(
        mergekit_config(method, base_model, layout_dir, checkpoint_dirs, resolved, params)
    )
    run_merge(config, str(out_dir), MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=0))
