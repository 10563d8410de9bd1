"""What a merge method declares: its parameters (typed, ranged, defaulted) and how the driver may call it.

A method is a pure tensor function decorated with :func:`merge_method`. Its parameter schema is derived from
its keyword-only signature (as mergekit's ``@merge_method`` does): ``list[float]`` is a per-model parameter,
``float``/``int``/``str``/``bool`` a global one; ``lambda_`` is spelled ``lambda`` in sweeps and on the
command line. This module knows no names: :mod:`study.methods.registry` maps names to methods.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from study.errors import MethodError, NotApplicable
from study.param_forms import CATCH_ALL, Gradient, parse_form

RESERVED_ARGS = {"tensor_name", "context"}


@dataclass(frozen=True)
class Param:
    """One parameter of a method, as a sweep or ``--set`` spells it."""

    name: str
    type: type
    default: Any
    per_model: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def describe(self) -> str:
        kind = f"list[{self.type.__name__}] per model" if self.per_model else self.type.__name__
        rng = ""
        if self.low is not None or self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            rng = f" in {lo}{'-inf' if self.low is None else self.low}, {'inf' if self.high is None else self.high}{hi}"
        if self.choices:
            rng = f" one of {list(self.choices)}"
        return f"{self.name}: {kind} = {self.default!r}{rng}"

    def check(self, value: Any, method: str) -> Any:
        """Coerce and range-check one value; raise ``MethodError`` naming the method and parameter."""
        where = f"method {method!r}, parameter {self.name!r}"
        values = value if self.per_model else [value]
        if self.per_model and not isinstance(value, (list, tuple)):
            values = [value]
        out = []
        for v in values:
            if isinstance(v, bool) and self.type is not bool:
                raise MethodError(f"{where}: expected {self.type.__name__}, got {v!r}")
            try:
                if self.type is bool:
                    if not isinstance(v, bool):
                        raise TypeError
                    cv: Any = v
                elif self.type is float:
                    cv = float(v)
                elif self.type is int:
                    if isinstance(v, float) and not v.is_integer():
                        raise TypeError
                    cv = int(v)
                else:
                    cv = str(v)
            except (TypeError, ValueError):
                raise MethodError(f"{where}: expected {self.type.__name__}, got {v!r}") from None
            if self.choices is not None and cv not in self.choices:
                raise MethodError(f"{where}: expected one of {list(self.choices)}, got {cv!r}")
            if self.low is not None and (cv < self.low or (self.low_open and cv == self.low)):
                raise MethodError(f"{where}: {cv!r} is out of range ({self.describe().split(' in ', 1)[-1]})")
            if self.high is not None and (cv > self.high or (self.high_open and cv == self.high)):
                raise MethodError(f"{where}: {cv!r} is out of range ({self.describe().split(' in ', 1)[-1]})")
            out.append(cv)
        return out if self.per_model else out[0]


@dataclass(frozen=True)
class MethodInfo:
    """What the driver and the CLI know about a method, besides its function."""

    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    reference: str = ""
    summary: str = ""
    version: int = 1
    """The method's semantics version: bumped whenever a change alters what it computes for the same inputs
    and parameters, so that cells merged by the old code are not mistaken for the new (it is in every cell key)."""
    needs_base: bool = True
    min_k: int = 1
    max_k: int | None = None
    prepass: Callable[..., Any] | None = None
    elementwise: bool = False
    """Each output entry depends only on the same entry of the inputs, so the driver may call ``fn`` on
    cache-sized blocks of the flattened tensors (see ``study.merge``): same result, far less memory traffic."""
    arg_names: dict[str, str] = field(default_factory=dict)
    whole_model: Callable[..., Any] | None = None
    """A whole-model adapter (mergekit, PEFT): ``whole_model(base_dir, checkpoint_dirs, params, out_dir)``
    writes the merged model directory itself; the driver then streams its tensors instead of calling ``fn``."""
    mergekit_note: str | None = None
    """Where the method's semantics differ from mergekit's method of that name, or ``"same as mergekit's <name>"``,
    or ``"not in mergekit; ..."``: mergekit is how most merges are written down, so a user comparing results must
    know where ours compute something else (printed by ``merge-study methods``; every built-in has one)."""
    statistics: Callable[[dict[str, Any]], list[Any]] | None = None
    """``statistics(params) -> [StatisticRequest, ...]``: data-dependent statistics (``study.statistics``) the
    driver computes once per checkpoint and calibration set, cached on disk, and passes in
    ``context["statistics"]`` (read one tensor at a time); the method must accept ``context``."""

    @property
    def applicable_k(self) -> str:
        hi = "inf" if self.max_k is None else str(self.max_k)
        return str(self.min_k) if self.min_k == self.max_k else f"{self.min_k}..{hi}"

    def check_k(self, k: int) -> None:
        """Raise ``NotApplicable`` when the method cannot merge ``k`` checkpoints (not an error)."""
        if k < self.min_k or (self.max_k is not None and k > self.max_k):
            raise NotApplicable(f"{self.name} applies to k in {self.applicable_k}, not k = {k}")

    def resolve_params(self, given: dict[str, Any], n_models: int | None = None) -> dict[str, Any]:
        """Defaults filled in, types and ranges checked; per-model lists checked against ``n_models``."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(known), n=1)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            raise MethodError(
                f"method {self.name!r} has no parameter {unknown[0]!r}{did} "
                f"(parameters: {', '.join(known) or 'none'})"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            value = given.get(p.name, p.default)
            if isinstance(value, dict):  # a per-tensor gradient or filters (study.methods.tensor_params)

                if self.whole_model is not None:
                    raise MethodError(f"method {self.name!r}, parameter {p.name!r}: a whole-model adapter takes "
                                      f"no per-tensor values (gradient, filters): use a native method")
                out[p.name] = check_form(p, value, self.name)
                continue
            if p.per_model:
                if value is None or (not isinstance(value, (list, tuple))):
                    value = [p.default if value is None else value] * (n_models or 1)
                    if n_models is None:
                        value = p.default if value is None else value
                checked = p.check(value, self.name)
                if n_models is not None and len(checked) == 1 and n_models > 1:
                    checked = checked * n_models
                if n_models is not None and len(checked) != n_models:
                    raise MethodError(
                        f"method {self.name!r}, parameter {p.name!r}: {len(checked)} values for {n_models} models"
                    )
                out[p.name] = checked
            else:
                out[p.name] = p.check(value, self.name)
        return out

    def call_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """Sweep parameter names mapped to the function's argument names (``lambda`` → ``lambda_``)."""
        return {self.arg_names.get(k, k): v for k, v in params.items()}


def _param_from_signature(arg: inspect.Parameter, hints: dict[str, Any], spec: dict[str, Any]) -> Param:
    name = arg.name.rstrip("_")
    hint = hints.get(arg.name, type(arg.default))
    per_model = typing.get_origin(hint) in (list, tuple)
    base_type = typing.get_args(hint)[0] if per_model else hint
    if typing.get_origin(base_type) is typing.Literal:
        spec = {**spec, "choices": typing.get_args(base_type)}
        base_type = type(typing.get_args(base_type)[0])
    default = arg.default
    if per_model and default is inspect.Parameter.empty:
        default = 1.0
    if default is inspect.Parameter.empty:
        raise TypeError(f"parameter {arg.name} of a merge method needs a default")
    return Param(name=name, type=base_type, default=default, per_model=per_model, **spec)


def merge_method(
    name: str,
    *,
    reference: str = "",
    version: int = 1,
    needs_base: bool = True,
    min_k: int = 1,
    max_k: int | None = None,
    ranges: dict[str, dict[str, Any]] | None = None,
    prepass: Callable[..., Any] | None = None,
    elementwise: bool = False,
    mergekit_note: str | None = None,
    statistics: Callable[[dict[str, Any]], list[Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a merge method: ``fn(base, tensors, *, <params>, tensor_name, context) -> Tensor``.

    ``ranges`` adds bounds or choices per parameter, e.g. ``{"density": {"low": 0, "low_open": True, "high": 1}}``.
    ``prepass(inputs, params) -> context`` runs once over all tensors before the per-tensor calls, for methods
    that need a global statistic (TIES with a global trim, AIM's calibration activations).
    ``version`` is the semantics version (start at 1; bump it when the method's results change, e.g. a new
    default or a fixed bug, so that stored cells of the old version are recomputed, not reused).
    ``elementwise=True`` promises that output entry j depends only on entry j of each input (no norms, ranks
    or random masks over the tensor); the driver then merges in blocks that stay in the CPU cache.
    ``mergekit_note`` says in one or more sentences where the semantics differ from mergekit's (see ``MethodInfo``).
    A parameter's help text is ``ranges[name]["help"]``.
    ``statistics(params)`` returns the ``study.statistics.StatisticRequest`` s the method needs (Gram matrices,
    Fisher diagonals, activations of the base or of each checkpoint); see ``MethodInfo.statistics``.
    """

    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"merge method {name!r}: version must be an integer >= 1, got {version!r}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
        params, arg_names = [], {}
        for arg in sig.parameters.values():
            if arg.kind is not inspect.Parameter.KEYWORD_ONLY or arg.name in RESERVED_ARGS:
                continue
            p = _param_from_signature(arg, hints, (ranges or {}).get(arg.name.rstrip("_"), {}))
            params.append(p)
            arg_names[p.name] = arg.name
        doc = inspect.getdoc(fn) or ""
        fn.__merge_method__ = MethodInfo(  # type: ignore[attr-defined]
            name=name,
            fn=fn,
            params=tuple(params),
            reference=reference,
            version=version,
            summary=doc.split("\n\n")[0].replace("\n", " "),
            needs_base=needs_base,
            min_k=min_k,
            max_k=max_k,
            prepass=prepass,
            elementwise=elementwise,
            arg_names=arg_names,
            mergekit_note=mergekit_note,
            statistics=statistics,
        )
        return fn

    return wrap


def check_form(param: Param, value: dict[str, Any], method: str) -> Any:
    """Every value of the form checked against ``param``'s type and range; the canonical form (a scalar when
    the form gives one value to every tensor). A per-model parameter's form gives each model the same value."""
    try:
        form = parse_form(value)
    except ValueError as exc:
        raise MethodError(f"method {method!r}, parameter {param.name!r}: {exc}") from None
    scalar = dataclasses.replace(param, per_model=False)

    def gradient(values: list[Any]) -> Any:
        if len(values) == 1:
            return scalar.check(values[0], method)
        if param.type is not float:
            raise MethodError(f"method {method!r}, parameter {param.name!r}: a gradient interpolates between "
                              f"values, so it needs a float parameter (this one is {param.type.__name__}): "
                              f"give per-tensor values with filters")
        return [scalar.check(v, method) for v in values]

    if isinstance(form, Gradient):
        g = gradient(form.gradient)
        return {"gradient": g} if isinstance(g, list) else g
    entries: list[dict[str, Any]] = []
    for cond in form.filters:
        v = gradient(cond.value) if isinstance(cond.value, list) else scalar.check(cond.value, method)
        if cond.filter in CATCH_ALL:
            if not entries:
                return {"gradient": v} if isinstance(v, list) else v
            entries.append({"value": v})
            break
        entries.append({"filter": cond.filter, "value": v})
    return {"filters": entries}
