"""Whole-model adapters: merge methods we run through another library instead of natively.

``mergekit:<name>`` runs any mergekit merge method through its Python API; ``peft:<combination_type>`` combines
LoRA-adapter checkpoints with PEFT's ``add_weighted_adapter`` and merges the result into the base. Both read
and write whole model directories, so their :class:`~study.methods.registry.MethodInfo` carries a
``whole_model`` callable and the driver streams the written result (see ``study.merge.iter_merge``). The
libraries are imported only when such a method is used.
"""

from __future__ import annotations

from typing import Any

from study.errors import MethodError
from study.methods.registry import MethodInfo


def _not_per_tensor(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("a whole-model adapter has no per-tensor function: the driver calls its whole_model")


def adapter_method(name: str) -> MethodInfo:
    """The schema and runner of ``mergekit:<name>`` or ``peft:<combination_type>``."""
    prefix, _, inner = name.partition(":")
    if not inner:
        raise MethodError(f"method {name!r}: name the {prefix} method after the colon, e.g. {prefix}:ties")
    if prefix == "mergekit":
        from study.adapters.mergekit import mergekit_method

        return mergekit_method(name, inner, _not_per_tensor)
    if prefix == "peft":
        from study.adapters.peft import peft_method

        return peft_method(name, inner, _not_per_tensor)
    raise MethodError(f"method {name!r}: unknown adapter prefix {prefix!r} (mergekit: or peft:)")
