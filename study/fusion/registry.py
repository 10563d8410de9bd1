"""Fusion methods by name: the built-ins of ``study.fusion.fuse`` and the ``study.fusion_methods`` entry points.

A registry of its own (:class:`study.registry.Registry`), beside the merge methods': a fusion method is not a
tensor function of weights, so it can never stand where a merge method is expected, and a plugin naming a
built-in fusion method is an error naming both. Listing names imports nothing; describing a built-in imports
``study.fusion.fuse``, which imports torch only when a method runs.
"""

from __future__ import annotations

from typing import Any

from study.errors import MethodError
from study.fusion.schema import FusionInfo
from study.registry import Registry

ENTRY_POINT_GROUP = "study.fusion_methods"
BUILTIN_NAMES = ("min_ce", "avg", "infifusion_topk")
FUSION_METHODS: Registry[object] = Registry(
    "fusion method", {name: f"study.fusion.fuse:{name}" for name in BUILTIN_NAMES}, group=ENTRY_POINT_GROUP)
PREFIX = "fusion:"
"""A fusion cell's ``method`` is ``fusion:<name>``: its series in every table and figure, never a merge's name."""


def fusion_names() -> list[str]:
    return FUSION_METHODS.names()


def check_fusion_name(name: str) -> None:
    if name not in FUSION_METHODS:
        raise MethodError(f"unknown fusion method {name!r}{FUSION_METHODS.suggest(name)} (run `merge-study methods` "
                          f"for the list)")


def get_fusion_method(name: str) -> FusionInfo:
    """The method's function and schema; imports its module on first use."""
    check_fusion_name(name)
    target = FUSION_METHODS.entry(name).target
    try:
        obj = FUSION_METHODS.get(name)
    except (ImportError, AttributeError) as exc:
        raise MethodError(f"fusion method {name!r}: cannot load {target}: {exc}") from None
    info = getattr(obj, "__fusion_method__", None)
    if not isinstance(info, FusionInfo):
        raise MethodError(f"fusion method {name!r}: {target} is not decorated with @fusion_method")
    if info.name != name:
        raise MethodError(f"fusion method {name!r}: {target} declares the name {info.name!r}; register it under "
                          f"that name")
    return info


def describe_fusion(info: FusionInfo) -> dict[str, Any]:
    """A fusion method's schema as plain data (``merge-study methods --json`` lists it under ``fusion``)."""
    return {"name": info.name, "summary": info.summary, "reference": info.reference, "version": info.version,
            "origin": FUSION_METHODS.entry(info.name).origin,
            "params": [{"name": p.name, "type": p.type.__name__, "default": p.default, "text": p.describe(),
                        "help": p.help, "training": i < len(info.params) - len(info.method_params)}
                       for i, p in enumerate(info.params)]}


def describe_fusion_methods() -> list[dict[str, Any]]:
    return [describe_fusion(get_fusion_method(n)) for n in fusion_names()]


def format_fusion_methods() -> str:
    """The listing's second part: each fusion method with its own parameters, then the shared training ones."""
    from study.fusion.schema import TRAINING_PARAMS

    lines = ["", "Fusion methods (sweep key `fusion:`; cells train the target on the teachers' fused distributions):"]
    for m in describe_fusion_methods():
        lines.append(f"{m['name']}  (v{m['version']}) — {m['summary']}")
        if m["reference"]:
            lines.append(f"    {m['reference']}")
        for p in m["params"]:
            if not p["training"]:
                lines.append(f"    {p['text']}")
                lines.append(f"        {p['help']}")
    lines.append("Training parameters of every fusion method:")
    for p in TRAINING_PARAMS:
        lines.append(f"    {p.describe()}")
        lines.append(f"        {p.help}")
    return "\n".join(lines)
