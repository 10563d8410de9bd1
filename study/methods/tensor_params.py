"""Per-tensor parameter values in a sweep: mergekit's gradients and ``filter`` conditions, and their binding.

mergekit lets a parameter vary over the model: a list of values is a *gradient*, interpolated linearly over
the layers (the first value at the first layer, the last at the last), and a list of ``{filter, value}``
conditions gives the value of the first condition whose ``filter`` is a substring of the tensor name. A
sweep already spells a grid as a YAML list, so a per-tensor value is a one-key mapping instead::

    density: {gradient: [0.9, 0.4]}                            # interpolated over layers
    t: {filters: [{filter: self_attn, value: [0, 0.5, 1]},     # mergekit's conditional form, as written
                  {filter: mlp, value: 0.7}, {value: 0.5}]}    # in a mergekit YAML (a value list = a gradient)
    density: [0.2, {gradient: [0.9, 0.4]}]                     # a grid of two points, one of them per tensor

Nothing of mergekit's resolution is re-implemented: values are evaluated by mergekit's own
``evaluate_setting`` (interpolation, filter matching, type validation), at the layer position ``t`` that
mergekit's planner assigns to each tensor (read back from the planner itself, see ``layer_positions``). A
tensor no condition matches gets the parameter's default, as mergekit falls back to its default.

Every value is checked against the method's range when the sweep is validated (an interpolated value lies
between two checked values, and each evaluated value is checked again when it is used). The canonical form
(values coerced, a one-value gradient as its value, ``filter: "*"`` as no filter, conditions after a
catch-all dropped, a catch-all first condition as its value) is what goes into the cell key. The driver binds
the values per tensor name (``bind_tensor_params``), as ``merge --config`` binds mergekit's plan
(``bind_per_tensor``, shared by both).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from study.errors import MethodError
from study.mergekit_plan import layer_positions
from study.param_forms import is_form

if TYPE_CHECKING:
    from study.methods.schema import MethodInfo, Param


def _setting(canonical: dict[str, Any]) -> Any:
    """A canonical form as mergekit's ``ParameterSetting`` (what a mergekit YAML holds for it)."""
    from mergekit.config import ConditionalParameter

    if "gradient" in canonical:
        return list(canonical["gradient"])
    return [ConditionalParameter(filter=c.get("filter"), value=c["value"]) for c in canonical["filters"]]


def _has_gradient(canonical: dict[str, Any]) -> bool:
    return "gradient" in canonical or any(isinstance(c["value"], list) for c in canonical["filters"])


def tensor_value(param: "Param", canonical: dict[str, Any], method: str, tensor_name: str,
                 positions: Callable[[], dict[str, float]]) -> Any:
    """One tensor's value of a canonical form, by mergekit's ``evaluate_setting`` (checked by ``param``);
    the parameter's default where no condition matches (``None`` from mergekit)."""
    from mergekit.config import evaluate_setting

    t = 0.0
    if _has_gradient(canonical):
        table = positions()
        if tensor_name not in table:
            raise MethodError(f"method {method!r}, parameter {param.name!r}: tensor {tensor_name} has no layer "
                              f"position in mergekit's plan of this model, so a gradient has no value there "
                              f"(give it filters with single values)")
        t = table[tensor_name]
    scalar = dataclasses.replace(param, per_model=False)
    value = evaluate_setting(tensor_name, _setting(canonical), t, validate=lambda v: scalar.check(v, method))
    return scalar.check(param.default if value is None else value, method)


class _WholeModel:
    """A per-tensor parameter as a method's prepass sees it: any use is an error naming the parameter (a
    prepass reads a parameter once for the whole model, e.g. TIES' global trim density)."""

    def __init__(self, param: str, method: str):
        self.message = (f"method {method!r}, parameter {param!r}: its prepass reads it once for the whole model, "
                        f"so it cannot vary per tensor here: give it one value")

    def _refuse(self, *_: Any) -> Any:
        raise MethodError(self.message)

    __float__ = __int__ = __index__ = __bool__ = __eq__ = __ne__ = __lt__ = __gt__ = __le__ = __ge__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<per-tensor value>"


def bind_per_tensor(info: "MethodInfo", params_for: Callable[[str], dict[str, Any]],
                    prepass_params: dict[str, Any] | None = None) -> "MethodInfo":
    """``info`` with its parameters bound per tensor name: the driver passes ``tensor_name`` to a method that
    accepts it, on the whole-tensor and the block-wise path alike, so binding needs no change to the driver.

    ``params_for(name)`` gives a tensor's resolved parameters (called once per tensor, then remembered). The
    prepass, if any, runs with ``prepass_params``; without them there is none (``merge --config``).
    """
    takes_name = "tensor_name" in inspect.signature(info.fn).parameters
    takes_context = "context" in inspect.signature(info.fn).parameters
    memo: dict[str, dict[str, Any]] = {}

    def per_tensor(base: Any, tensors: list[Any], *, tensor_name: str, context: Any = None) -> Any:
        if tensor_name not in memo:
            memo[tensor_name] = info.call_kwargs(params_for(tensor_name))
        extra: dict[str, Any] = {"tensor_name": tensor_name} if takes_name else {}
        if takes_context:
            extra["context"] = context
        return info.fn(base, tensors, **memo[tensor_name], **extra)

    prepass = None
    if info.prepass is not None and prepass_params is not None:
        inner = info.prepass

        def prepass(inputs: Any, _params: dict[str, Any]) -> Any:
            return inner(inputs, prepass_params)

    return dataclasses.replace(info, fn=per_tensor, params=(), prepass=prepass)


def bind_tensor_params(info: "MethodInfo", params: dict[str, Any], layout: Path,
                       n_models: int) -> tuple["MethodInfo", dict[str, Any]]:
    """``(info, params)`` unchanged when no parameter is per tensor; else the method bound per tensor name (and
    no parameters left to pass), its per-tensor values evaluated on ``layout``'s tensor names and layers."""
    forms = {k: v for k, v in params.items() if is_form(v)}
    if not forms:
        return info, params
    if info.whole_model is not None:
        raise MethodError(f"method {info.name!r} runs as a whole model, so its parameters cannot vary per tensor "
                          f"({', '.join(forms)}): use a native method")
    declared = {p.name: p for p in info.params}
    positions = functools.cache(functools.partial(layer_positions, Path(layout)))  # planned on first use

    def params_for(name: str) -> dict[str, Any]:
        out = dict(params)
        for key, form in forms.items():
            value = tensor_value(declared[key], form, info.name, name, positions)
            out[key] = [value] * n_models if declared[key].per_model else value
        return out

    prepass_params = {k: _WholeModel(k, info.name) if k in forms else v for k, v in params.items()}
    return bind_per_tensor(info, params_for, prepass_params), {}
