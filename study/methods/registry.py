"""The method registry: names → methods, filled from built-ins, the ``study.methods`` entry points and ``--plugin``.

Listing names imports nothing heavy (no torch): built-ins are ``"module:attr"`` strings and plugins entry
points, both materialised on first use (:class:`study.registry.Registry`). A plugin that reuses a built-in's
name is an error naming both, not a silent shadow. ``mergekit:<name>`` and ``peft:<combination_type>`` are
adapters (``ADAPTERS``, implemented in :mod:`study.adapters`), resolved on use rather than listed.
"""

from __future__ import annotations

import importlib
from typing import Callable

from study.errors import MethodError, UserError
from study.methods.schema import MethodInfo, Param, merge_method
from study.registry import Registry

__all__ = ["MethodInfo", "Param", "merge_method", "METHODS", "get_method", "method_names", "check_name",
           "is_adapter", "ADAPTERS", "register_module", "registered_modules"]

ENTRY_POINT_GROUP = "study.methods"
BUILTIN_NAMES = (
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "model_stock", "slerp", "breadcrumbs",
    "tsv_merge", "iso_c", "iso_cts", "subspace_boosting", "aim",
    "della", "della_linear", "breadcrumbs_ties", "sce",
    "nuslerp", "karcher", "multislerp",
    "regmean", "fisher",
)
METHODS: Registry[object] = Registry(
    "method", {name: f"study.methods.{name}:{name}" for name in BUILTIN_NAMES}, group=ENTRY_POINT_GROUP
)
PLUGIN_ORIGIN = "--plugin"
ADAPTERS: Registry[Callable[[str, str], MethodInfo]] = Registry("adapter", {
    "mergekit": "study.adapters.mergekit:mergekit_method",
    "peft": "study.adapters.peft:peft_method",
})
"""``<prefix>:<inner>`` method names: ``factory(name, inner) -> MethodInfo``, the library imported on first use."""


def register_module(module: str) -> None:
    """Load the methods of an importable module named on the command line (``--plugin module``)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"--plugin {module}: cannot import it ({exc}); is it on PYTHONPATH?") from None
    found = False
    for attr, obj in vars(mod).items():
        info = getattr(obj, "__merge_method__", None)
        if isinstance(info, MethodInfo) and info.fn is obj:
            METHODS.add(info.name, f"{module}:{attr}", PLUGIN_ORIGIN)
            found = True
    if not found:
        raise UserError(f"--plugin {module}: the module defines no @merge_method function")


def registered_modules() -> list[str]:
    """Modules loaded with ``--plugin`` in this process (worker processes must load them again)."""
    return sorted({e.target.partition(":")[0] for e in METHODS.entries().values() if e.origin == PLUGIN_ORIGIN})


def method_names() -> list[str]:
    """Names of every registered native method, without importing any of them."""
    return METHODS.names()


def is_adapter(name: str) -> bool:
    return name.partition(":")[0] in ADAPTERS and ":" in name


def check_name(name: str) -> None:
    """Raise ``MethodError`` with a suggestion for an unknown method, importing nothing."""
    if is_adapter(name) or name in METHODS:
        return
    raise MethodError(
        f"unknown method {name!r}{METHODS.suggest(name)} (run `merge-study methods` for the list, or "
        f"use mergekit:<name> / peft:<combination_type>)"
    )


_ADAPTERS: dict[str, MethodInfo] = {}  # one MethodInfo per concrete adapter name, built once


def get_method(name: str) -> MethodInfo:
    """The method's function and schema; imports its module on first use."""
    check_name(name)
    if is_adapter(name):
        if name not in _ADAPTERS:
            prefix, _, inner = name.partition(":")
            if not inner:
                raise MethodError(f"method {name!r}: name the {prefix} method after the colon, e.g. {prefix}:ties")
            _ADAPTERS[name] = ADAPTERS.get(prefix)(name, inner)
        return _ADAPTERS[name]
    target = METHODS.entry(name).target
    try:
        obj = METHODS.get(name)
    except (ImportError, AttributeError) as exc:
        raise MethodError(f"method {name!r}: cannot load {target}: {exc}") from None
    info = getattr(obj, "__merge_method__", None)
    if not isinstance(info, MethodInfo):
        raise MethodError(f"method {name!r}: {target} is not decorated with @merge_method")
    if info.name != name:
        raise MethodError(f"method {name!r}: {target} declares the name {info.name!r}; register it under that name")
    return info
