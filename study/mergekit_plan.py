"""mergekit's own planner, asked what it would do: the per-tensor tasks of a configuration (``merge --config``)
and the layer position it gives each tensor (the abscissa of a sweep's gradients).

Planning loads no tensor and writes no file. Shared by ``study.mergekit_config`` and
``study.methods.tensor_params`` so that neither imports the other.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from study.errors import MethodError, UserError
from study.quiet import transformers_errors_only

OPTIONS = dict(copy_tokenizer=True, quiet=True, random_seed=0, write_model_card=False)
"""mergekit's run options besides the device: the adapter's (measured to match ``mergekit-yaml`` bit for
bit), without the model card, whose README.md and mergekit_config.yml a later ``--force`` would refuse to
delete; the configuration is kept in ``merge_study.json`` instead."""


def mapping(value: Any) -> dict[Any, Any]:
    """A mergekit ``ImmutableMap`` field as a dict (pydantic stores it as ``ImmutableMap`` or its ``immutables.Map``)."""
    return dict(getattr(value, "data", value))


def mergekit_tasks(path: Path, config: Any, device: str) -> list[Any]:
    """mergekit's per-tensor merge tasks (output weight, models, resolved parameters); loads no tensor."""
    from mergekit.architecture import get_architecture_info
    from mergekit.io.tasks import LoaderCache, SaveTensor
    from mergekit.merge import _model_out_config
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    options = MergeOptions(device=device, **OPTIONS)
    planned = config.model_copy(deep=True)  # the planner rewrites models/slices into modules in place
    try:
        arch = get_architecture_info(planned, options)
        LoaderCache().setup(options=options)
        with transformers_errors_only():
            out_config = _model_out_config(planned, arch)
        # The very plan run_merge executes; building it touches no file (the path is only where it would write).
        plan = MergePlanner(planned, arch, options, out_config).plan_to_disk(str(path) + ".never-written")
        return [task.tensor_task for task in plan if isinstance(task, SaveTensor)]
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserError(f"--config {path}: mergekit cannot plan it: {str(exc).splitlines()[0]}") from None


def layer_positions(layout: Path) -> dict[str, float]:
    """Each tensor's layer position ``t`` in [0, 1] as mergekit's planner assigns it (its gradients' abscissa).

    mergekit's ``MergePlanner`` plans a one-model ``linear`` merge of ``layout`` whose weight is the gradient
    ``[0, 1]``; the weight it resolves for a tensor is then exactly that tensor's ``t`` ((1 - t)·0 + t·1 = t
    in floating point), so the positions are the planner's own (layers i/(n - 1), embeddings and final norm 0)
    rather than a second implementation of them. Cached per directory and config.json modification time.
    """
    config = Path(layout) / "config.json"
    return dict(_positions(str(Path(layout).resolve()), config.stat().st_mtime_ns if config.exists() else 0))


@functools.lru_cache(maxsize=16)
def _positions(layout: str, _mtime: int) -> tuple[tuple[str, float], ...]:
    from mergekit.config import MergeConfiguration

    probe = MergeConfiguration.model_validate(
        {"merge_method": "linear", "models": [{"model": layout, "parameters": {"weight": [0.0, 1.0]}}]})
    try:
        tasks = mergekit_tasks(Path(layout), probe, "cpu")
    except UserError as exc:
        raise MethodError(f"a gradient needs mergekit's layer positions, and {exc}") from None
    out = []
    for task in tasks:
        (weights,) = mapping(task.input_parameters).values()
        out.append((task.output_weight.name, float(mapping(weights)["weight"])))
    return tuple(out)
