"""The shape of a per-tensor parameter value in a sweep: ``{gradient: [...]}`` or ``{filters: [...]}``.

A leaf module (pydantic only), so that the sweep schema (``study.config``) and the method schema
(``study.methods.schema``) can check a form without importing mergekit or the merge driver; what the values
mean per tensor, and how they reach a method, is ``study.methods.tensor_params``.
"""

from __future__ import annotations

from typing import Any, Callable, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Scalar = Union[bool, int, float, str]
CATCH_ALL = (None, "*", "")
"""Filters that match every tensor in mergekit's ``evaluate_setting`` (no filter, ``*``, and the empty string)."""

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Gradient(BaseModel):
    """``{gradient: [v0, ..., vn]}``: mergekit's value list, interpolated over the layers."""

    model_config = _STRICT
    gradient: list[Scalar] = Field(min_length=1)


class Condition(BaseModel):
    """One of mergekit's conditional values: ``value`` (a scalar or a gradient list) where ``filter`` matches."""

    model_config = _STRICT
    filter: str | None = None
    value: Union[Scalar, list[Scalar]]


class Filters(BaseModel):
    """``{filters: [...]}``: mergekit's conditional values, the first matching condition wins."""

    model_config = _STRICT
    filters: list[Condition] = Field(min_length=1)


FORMS = "{gradient: [values]} or {filters: [{filter: NAME, value: V}, ..., {value: V}]}"


def is_form(value: Any) -> bool:
    """A per-tensor form is the only mapping a sweep parameter takes (a list is a grid, a scalar a value)."""
    return isinstance(value, dict)


def parse_form(value: Any) -> Gradient | Filters:
    """The form's shape checked (no method needed); ``ValueError`` with one line saying what is wrong."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("gradient", "filters"):
        keys = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"a per-tensor value is {FORMS}, got {{{keys}}}")
    model = Gradient if "gradient" in value else Filters
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"]]
        union = [x for x in loc if x.startswith(("bool", "int", "float", "str", "list["))]
        where = "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in loc if x not in union).lstrip(".")
        msg = f"expected a single value (a number, true/false or a word), got {err['input']!r}" if union else err["msg"]
        raise ValueError(f"{where}: {msg} (a per-tensor value is {FORMS})") from None


def map_leaves(value: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """The form with ``fn`` applied to every value in it (``c/k`` resolution); the shape checked first."""
    form = parse_form(value)
    if isinstance(form, Gradient):
        return {"gradient": [fn(v) for v in form.gradient]}
    return {"filters": [{**({} if c.filter is None else {"filter": c.filter}),
                         "value": [fn(v) for v in c.value] if isinstance(c.value, list) else fn(c.value)}
                        for c in form.filters]}
