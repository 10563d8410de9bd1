"""Whole-model adapters: merge methods we run through another library instead of natively.

``mergekit:<name>`` runs any mergekit merge method through its Python API; ``peft:<combination_type>`` combines
LoRA-adapter checkpoints with PEFT's ``add_weighted_adapter`` and merges the result into the base. Both read
and write whole model directories, so their :class:`~study.methods.schema.MethodInfo` carries a
``whole_model`` callable and the driver streams the written result (see ``study.merge.iter_merge``). The
libraries are imported only when such a method is used; :mod:`study.methods.registry` finds the two families
by name (``ADAPTERS``), so nothing here imports the registry or the registry this package.
"""

from __future__ import annotations

from typing import Any


def not_per_tensor(*_args: Any, **_kwargs: Any) -> Any:
    """The ``fn`` of a whole-model adapter's ``MethodInfo``: never called, the driver calls ``whole_model``."""
    raise RuntimeError("a whole-model adapter has no per-tensor function: the driver calls its whole_model")
