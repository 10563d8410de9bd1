"""A tensor source for any checkpoint directory: a full model, or a LoRA adapter seen over its base.

Above both :mod:`study.tensors` (full models) and :mod:`study.lora` (adapters, which read the base through a
``TensorSource``), so that neither has to import the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from study.errors import CheckpointError
from study.lora import LoraSource, is_lora_dir
from study.tensors import SafetensorsSource, TensorSource


def open_source(path: Path, base: TensorSource | None = None) -> TensorSource:
    """A tensor source for a model directory, or for a LoRA adapter directory over ``base``."""
    path = Path(path)
    if is_lora_dir(path):
        if base is None:
            raise CheckpointError(f"{path}: a LoRA adapter needs its base model to be merged")
        return LoraSource(path, base)
    return SafetensorsSource(path)
