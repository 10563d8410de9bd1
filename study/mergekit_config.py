"""A mergekit configuration (``merge --config FILE.yml``): a native merge plan, or a run of mergekit itself.

The YAML is parsed by mergekit's own ``MergeConfiguration``, and every per-tensor parameter value (gradients
interpolated over layers, ``filter`` conditions, slice/model/global precedence) is read from mergekit's own
planner (``MergePlanner``, the plan ``run_merge`` executes): nothing of mergekit's resolution is re-implemented, so the values
are mergekit's by construction. The native streaming driver then runs the merge when the method has the same
semantics natively (``NATIVE``) and the plan maps onto it: every output tensor is the same-named tensor of
each input (no layer re-arrangement), the same models feed every tensor, the merge computes in float32 and
writes the base's dtype, no tokenizer is built, and each tensor's parameters pass the native method's
checks. Anything else runs through mergekit (``run_merge``, as the ``mergekit:<name>`` adapter calls it),
and the reason is reported. Both write through :mod:`study.merged_dir`'s output rules.

mergekit's pydantic models ignore keys they do not know, and its parameter lookup ignores parameter names
its method does not declare, so a typo would silently merge something else: both are refused here, naming
the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from study.errors import MethodError, UserError
from study.merged_dir import WEIGHT_FILES, Staging, check_output
from study.methods.schema import MethodInfo
from study.mergekit_plan import OPTIONS
from study.mergekit_plan import mapping as _mapping
from study.mergekit_plan import mergekit_tasks as _mergekit_tasks
from study.quiet import transformers_errors_only

NATIVE = ("linear", "task_arithmetic", "ties", "slerp", "breadcrumbs", "breadcrumbs_ties", "sce", "nuslerp", "multislerp",
          "karcher")
"""mergekit methods whose native namesake computes the same function, given the conditions of
``_native_params`` (the spherical three to float32 rounding: tests/test_methods_spherical.py). Not the DARE
family: ours follows the paper's rescale and seeds its masks by tensor name (docs/methods.md), mergekit
rescales to the L1 norm from the global RNG."""

@dataclass(frozen=True)
class NativePlan:
    """A configuration the streaming driver runs: one native method, per-tensor parameters from mergekit."""

    method: str
    layout: Path
    """The directory whose tensor names, config and tokenizer the output copies (mergekit's donor model)."""
    checkpoints: tuple[Path, ...]
    tensor_params: Mapping[str, dict[str, Any]]

    def method_info(self) -> MethodInfo:
        """The native method with its parameters bound per tensor name (``tensor_params.bind_per_tensor``,
        which also binds a sweep's per-tensor values)."""
        from study.methods.registry import get_method
        from study.methods.tensor_params import bind_per_tensor

        return bind_per_tensor(get_method(self.method), self.tensor_params.__getitem__)


@dataclass(frozen=True)
class ConfigPlan:
    """A parsed configuration, and how it will run: ``native`` set, or mergekit with ``reason``."""

    path: Path
    text: str
    config: Any
    inputs: tuple[Path, ...]
    native: NativePlan | None
    reason: str = ""

    @property
    def runner(self) -> str:
        return "native" if self.native is not None else "mergekit"


def load_config(path: Path, zoo_root: Path | None = None) -> tuple[str, Any]:
    """The YAML text and its ``MergeConfiguration``; a ``UserError`` naming the key for anything it rejects.

    ``zoo:NAME`` model references are the built mini zoo's directories (``zoo_root``, default as ``--zoo``).
    """
    import yaml
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        text = Path(path).read_text()
        raw = yaml.safe_load(text)
    except OSError as exc:
        raise UserError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config {path}: expected a mergekit configuration (a mapping with merge_method), "
                        f"got {type(raw).__name__}")
    raw = _resolve_zoo(raw, path, zoo_root)
    try:
        config = MergeConfiguration.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "configuration"
        raise UserError(f"--config {path}: {where}: {err['msg']}") from None
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"--config {path}: {exc}") from None
    unknown = next(_unknown_keys(raw, config.model_dump(exclude_unset=True), ""), None)
    if unknown:
        raise UserError(f"--config {path}: unsupported key {unknown!r}: mergekit does not read it (check the "
                        f"spelling against mergekit's configuration format)")
    _check_parameter_names(path, raw, config.merge_method)
    return text, config


MODEL_KEYS = ("model", "base_model", "tokenizer_source", "source", "path")
"""Keys under which a mergekit configuration names a model (``models``, ``slices.sources``, ``modules``,
``base_model``, ``tokenizer_source``, ``tokenizer.source``, a ``{model: {path: ...}}`` reference)."""


def _resolve_zoo(raw: Any, path: Path, zoo_root: Path | None, where: str = "") -> Any:
    """The configuration with every ``zoo:NAME`` model reference replaced by that zoo model's directory, before
    mergekit parses it (mergekit would take ``zoo:add`` for a hub id); an unknown name is an error naming its key."""
    from study.zoo.names import split_model_ref

    if isinstance(raw, dict):
        return {k: _resolve_zoo(v, path, zoo_root, f"{where}.{k}" if where else str(k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_resolve_zoo(v, path, zoo_root, f"{where}[{i}]") for i, v in enumerate(raw)]
    zoo_ref = split_model_ref(raw) if isinstance(raw, str) and where.rsplit(".", 1)[-1] in MODEL_KEYS else None
    if zoo_ref is not None:
        from study.zoo import load_zoo

        try:
            return str(load_zoo(zoo_root, family=zoo_ref[0]).model(zoo_ref[1]))
        except UserError as exc:
            raise UserError(f"--config {path}: {where}: {exc}") from None
    return raw


def _unknown_keys(raw: Any, parsed: Any, where: str) -> Iterator[str]:
    """Keys of the YAML that mergekit's parsed configuration does not hold (pydantic dropped them)."""
    if isinstance(raw, dict) and isinstance(parsed, dict):
        for key, value in raw.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in parsed:
                yield path
            else:
                yield from _unknown_keys(value, parsed[key], path)
    elif isinstance(raw, list) and isinstance(parsed, list):
        for i, (r, p) in enumerate(zip(raw, parsed)):
            yield from _unknown_keys(r, p, f"{where}[{i}]")


def _parameter_blocks(raw: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``parameters`` mapping of the configuration, with its key path."""
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key == "parameters" and isinstance(value, dict):
            yield path, value
        elif isinstance(value, dict):
            yield from _parameter_blocks(value, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield from _parameter_blocks(item, f"{path}[{i}]")


def _check_parameter_names(path: Path, raw: dict[str, Any], method_name: str) -> None:
    from mergekit.merge_methods import registry

    try:
        method = registry.get(method_name)
    except RuntimeError:
        known = ", ".join(sorted(m.spec.name for m in registry.registered_methods()))
        raise UserError(f"--config {path}: merge_method: mergekit has no method {method_name!r} (known: {known})") from None
    names = {p.name for p in method.spec.parameters}
    for where, block in _parameter_blocks({k: v for k, v in raw.items() if k != "tokenizer"}):
        for key in block:
            if key not in names:
                raise UserError(f"--config {path}: unsupported key '{where}.{key}': merge method {method_name} has "
                                f"no parameter {key!r} (parameters: {', '.join(sorted(names)) or 'none'})")


def _local_dir(ref: Any) -> Path | None:
    """The local directory of a plain model reference (no LoRA, no revision), else None."""
    if ref.lora is not None or ref.model.revision is not None:
        return None
    path = Path(ref.model.path).expanduser()
    return path if path.is_dir() else None


def _local_inputs(config: Any) -> tuple[Path, ...]:
    """Every referenced directory on this machine (models and LoRA adapters): what a merge must not touch."""
    out = []
    for ref in config.referenced_models():
        for part in (ref.model, ref.lora):
            if part is not None and Path(part.path).expanduser().is_dir():
                out.append(Path(part.path).expanduser())
    return tuple(sorted(set(out)))


def plan_config(path: Path, device: str = "cpu", zoo_root: Path | None = None) -> ConfigPlan:
    """Parse ``path``, let mergekit plan it (its errors are the user's), and decide who runs it."""
    text, config = load_config(path, zoo_root)
    inputs = _local_inputs(config)
    tasks = _mergekit_tasks(path, config, device)
    native, reason = _native_plan(config, tasks)
    return ConfigPlan(Path(path), text, config, inputs, native, reason)


def _native_plan(config: Any, tasks: list[Any]) -> tuple[NativePlan | None, str]:
    """The native plan, or None and why mergekit must run the configuration."""
    from mergekit.io.tasks import GatherTensors

    from study.methods.registry import get_method
    from study.tensors import SafetensorsSource, is_float_dtype, storage_dtype

    method = config.merge_method
    if method not in NATIVE:
        return None, f"merge_method {method} has no native equivalent"
    for key in ("modules", "tokenizer_source", "tokenizer", "chat_template"):
        if getattr(config, key) is not None:
            return None, f"{key} is set (mergekit builds that output)"
    if not tasks:
        return None, "mergekit planned no tensor"
    order = tuple(tasks[0].model_order)
    base_ref = tasks[0].base_model
    dirs = {ref: _local_dir(ref) for ref in (*order, base_ref) if ref is not None}
    if any(d is None for d in dirs.values()):
        return None, "a model is not a plain local directory (a hub id, a revision or a LoRA)"
    donor = config.base_model or order[0]  # mergekit's config and tokenizer donor
    layout = dirs.get(donor) or _local_dir(donor)
    if layout is None:
        return None, "the donor model is not a local directory"
    sources = {d: SafetensorsSource(d) for d in set(dirs.values()) | {layout}}
    dtypes = {storage_dtype(s) for s in sources.values()}
    compute = config.dtype or (dtypes.pop() if len(dtypes) == 1 else "mixed")
    if compute != "float32":
        return None, f"mergekit computes in {compute} (native merges compute in float32)"
    out_dtype = config.out_dtype or config.dtype or compute
    if out_dtype != storage_dtype(sources[layout]):
        return None, f"the output dtype {out_dtype} is not the base's {storage_dtype(sources[layout])}"
    names = {n for n in sources[layout].names() if is_float_dtype(sources[layout].dtype(n))}
    native_info = get_method(method)
    params: dict[str, dict[str, Any]] = {}
    for task in tasks:
        name = task.output_weight.name
        gather = task.gather_tensors
        if not isinstance(gather, GatherTensors):
            return None, f"tensor {name} is not a plain gather of its inputs"
        if tuple(task.model_order) != order or task.base_model != base_ref:
            return None, "not every tensor merges the same models (slices with different sources)"
        if any(w.name != name for w in _mapping(gather.weight_info).values()):
            return None, f"tensor {name} is read from differently named tensors (slices move layers)"
        try:
            params[name] = _native_params(method, task, native_info)
        except (_NotNative, MethodError) as exc:
            return None, f"tensor {name}: {exc}"
    if set(params) != names:
        return None, "mergekit's output tensors are not the base's (slices change the layers)"
    if method in ("linear", "slerp", "karcher"):  # every model an input (mergekit's karcher takes the base too)
        checkpoints = tuple(dirs[r] for r in (_slerp_order(order, base_ref) if method == "slerp" else order))
    else:
        checkpoints = tuple(dirs[r] for r in order if r != base_ref)
    return NativePlan(method, layout, checkpoints, params), ""


class _NotNative(Exception):
    """A tensor's parameters that the native method cannot express."""


def _slerp_order(order: tuple[Any, ...], base_ref: Any) -> tuple[Any, Any]:
    """mergekit's slerp goes from the base (t = 0) to the other model, as native slerp from its first to second."""
    return (base_ref, next(r for r in order if r != base_ref))


def _native_params(method: str, task: Any, info: MethodInfo) -> dict[str, Any]:
    """One tensor's mergekit parameters as the native method's, checked by it; ``_NotNative`` when they differ
    in meaning (which mergekit's ``GeneralizedTaskArithmeticMerge`` and its other methods define)."""
    shared = _mapping(task.parameters)
    per = {ref: _mapping(p) for ref, p in _mapping(task.input_parameters).items()}
    others = [per[r] for r in task.model_order if r != task.base_model]

    def same(key: str) -> Any:
        values = {p[key] for p in others}
        if len(values) != 1:
            raise _NotNative(f"{key} differs between models ({sorted(values)}); native {method} takes one")
        return values.pop()

    if method == "linear":
        if not shared["normalize"]:
            raise _NotNative("normalize: false (native linear always divides by the sum of weights)")
        given = {"weight": [per[r]["weight"] for r in task.model_order]}
    elif method == "slerp":
        given = {"t": shared["t"]}
    elif method == "karcher":
        given = {"max_iter": shared["max_iter"], "tol": shared["tol"]}
    elif method in ("nuslerp", "multislerp"):  # task vectors exactly when mergekit has a base
        keys = ("nuslerp_flatten", "nuslerp_row_wise") if method == "nuslerp" else ("normalize_weights", "eps")
        given = {"weight": [p["weight"] for p in others], "use_base": task.base_model is not None,
                 **{key: shared[key] for key in keys}}
    elif method == "sce":  # no per-model weight: SCE computes its own; int8_mask only changes the mask's dtype
        given = {"select_topk": shared["select_topk"]}
    else:
        elects = method in ("ties", "breadcrumbs_ties")  # sign election: normalize is a native option
        if shared["normalize"] and not elects:
            raise _NotNative(f"normalize: true is not native {method}'s")
        if method != "task_arithmetic" and shared["rescale"]:
            raise _NotNative("rescale: true (native sparsification does not rescale)")
        given = {"weight": [p["weight"] for p in others], "lambda": shared["lambda"]}
        if elects:
            if any(w < 0 for w in given["weight"]):
                raise _NotNative("a negative weight (mergekit elects signs on weighted task vectors)")
            given.update(normalize=bool(shared["normalize"]), density=same("density"))
        if method == "ties":
            given.update(trim_scope="tensor")
        if method in ("breadcrumbs", "breadcrumbs_ties"):
            given.update(density=same("density"), gamma=same("gamma"))
    return info.resolve_params(given, n_models=len(given["weight"]) if "weight" in given else 2)


def merge_config(plan: ConfigPlan, out: Path, *, force: bool = False, device: str = "cpu",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Write the merge that ``plan`` describes into ``out`` (natively or through mergekit)."""
    metadata = {"config": str(plan.path), "mergekit_config": plan.text, "runner": plan.runner,
                **({"reason": plan.reason} if plan.reason else {})}
    if plan.native is not None:
        from study.merge import open_inputs, write_merged

        native = plan.native
        inputs = open_inputs(native.layout, list(native.checkpoints), device=device)
        return write_merged(inputs, native.method_info(), {}, out, force=force, progress=progress,
                            metadata={"method": native.method, **metadata})
    return _run_mergekit(plan, out, force=force, device=device, metadata=metadata)


def _run_mergekit(plan: ConfigPlan, out: Path, *, force: bool, device: str, metadata: dict[str, Any]) -> Path:
    """mergekit writes into the staging directory; the output is renamed into place only when it succeeded."""
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    target = check_output(out, plan.inputs, force=force)
    with Staging(target) as staging:
        try:
            with transformers_errors_only():
                run_merge(plan.config.model_copy(deep=True), str(staging.path), MergeOptions(device=device, **OPTIONS))
        except (RuntimeError, ValueError, OSError) as exc:
            raise UserError(f"--config {plan.path}: mergekit failed: {str(exc).splitlines()[0]}") from None
        staging.write_marker({"merged_by": "merge-study", "method": f"mergekit:{plan.config.merge_method}",
                              **metadata})
        staging.match_marker_mode(p.name for p in staging.path.iterdir() if WEIGHT_FILES.fullmatch(p.name))
        check_output(out, plan.inputs, force=force)
        staging.commit()
    return Path(out)

