"""LoRA adapters as checkpoints: a ``TensorSource`` that materialises θ₀ + ΔW per tensor.

With it every native method accepts LoRA checkpoints: the task vector of an adapted weight is
ΔW = B·A·scaling, scaling = lora_alpha / r (or lora_alpha / √r with ``use_rslora``, the rank-stabilised
LoRA of Kalajdzievski 2023), per-module ``rank_pattern`` / ``alpha_pattern`` overrides matched as PEFT does
(``(.*\\.)?KEY$``), transposed for ``fan_in_fan_out`` layers (GPT-2's Conv1D stores weights as in × out).
Embedding LoRA (``lora_embedding_A/B``) gives ΔW = (B·A)ᵀ·scaling. ``modules_to_save`` tensors, and the
embedding ``base_layer`` weights PEFT saves with embedding LoRA, replace the base's.
Tensors the adapter does not touch equal the base's (a zero task vector). Only plain LoRA is supported: DoRA
and other PEFT types raise a ``CheckpointError`` instead of merging something else.

Materialised tensors are float32 (θ₀ in float32 plus ΔW), so a bf16 base does not round the task vector away.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import CheckpointError
from study.tensors import TensorSource, read_safetensors_header

ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."
LORA_PARTS = {"lora_A": "A", "lora_B": "B", "lora_embedding_A": "A", "lora_embedding_B": "B"}


@dataclass(frozen=True)
class LoraModule:
    """One adapted base tensor: where its factors are and how to scale them."""

    target: str
    a_key: str
    b_key: str
    scaling: float
    embedding: bool
    fan_in_fan_out: bool


def is_lora_dir(path: Path) -> bool:
    """A PEFT adapter directory (it has ``adapter_config.json``) rather than a full model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable {ADAPTER_CONFIG}: {exc}") from None
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        raise CheckpointError(f"{path}: PEFT type {kind} is not supported as a checkpoint (only LORA)")
    if config.get("use_dora"):
        raise CheckpointError(f"{path}: DoRA adapters are not supported (use_dora: true); merge them into full weights first")
    return config


def adapter_file(path: Path) -> Path:
    file = path / "adapter_model.safetensors"
    if not file.is_file():
        hint = " (only adapter_model.bin: convert it to safetensors)" if (path / "adapter_model.bin").is_file() else ""
        raise CheckpointError(f"{path}: no adapter_model.safetensors{hint}")
    return file


def _pattern(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _base_names_match(declared: str | None, base: TensorSource) -> bool:
    if not declared:
        return True
    base_path = Path(base.path).resolve()
    declared_path = Path(declared).expanduser()
    if declared_path.exists():
        return declared_path.resolve() == base_path
    config_file = base_path / "config.json"
    name_or_path = ""
    if config_file.is_file():
        name_or_path = json.loads(config_file.read_text()).get("_name_or_path", "") or ""
    hub_dir = "models--" + declared.replace("/", "--")
    return declared in (name_or_path, base_path.name) or hub_dir in str(base_path) or base_path.name == Path(declared).name


def lora_modules(path: Path, base: TensorSource) -> tuple[dict[str, LoraModule], dict[str, str]]:
    """Adapted tensors and ``modules_to_save`` replacements, checked against the base from headers only.

    Raises ``CheckpointError`` naming the adapter, the tensor and the expected vs found shape or base.
    """
    path = Path(path)
    config = adapter_config(path)
    declared = config.get("base_model_name_or_path")
    if not _base_names_match(declared, base):
        raise CheckpointError(
            f"LoRA adapter {path}: base_model_name_or_path is {declared!r} but the base is {base.path}"
        )
    header = read_safetensors_header(adapter_file(path))
    base_names = set(base.names())
    factors: dict[str, dict[str, tuple[str, list[int]]]] = {}
    embeddings: set[str] = set()
    replaced: dict[str, str] = {}
    for key, meta in header.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        match = re.match(r"^(.*)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?(?:\.weight)?$", name)
        if match:
            module, part = match.group(1), match.group(2)
            factors.setdefault(module, {})[LORA_PARTS[part]] = (key, list(meta["shape"]))
            if "embedding" in part:
                embeddings.add(module)
            continue
        target = re.sub(r"\.(modules_to_save(\.[^.]+)?|base_layer)\.", ".", name)
        if target not in base_names:
            raise CheckpointError(f"LoRA adapter {path}: tensor {key} has no counterpart {target} in the base {base.path}")
        if list(base.shape(target)) != list(meta["shape"]):
            raise CheckpointError(
                f"LoRA adapter {path}: tensor {target} has shape {tuple(meta['shape'])}, the base has {base.shape(target)}"
            )
        replaced[target] = key
    r_default, alpha_default = config.get("r", 8), config.get("lora_alpha", 8)
    modules: dict[str, LoraModule] = {}
    for module, parts in factors.items():
        if "A" not in parts or "B" not in parts:
            raise CheckpointError(f"LoRA adapter {path}: module {module} has only one of its two factors (A, B)")
        target = f"{module}.weight"
        if target not in base_names:
            raise CheckpointError(f"LoRA adapter {path}: it adapts {target}, which the base {base.path} does not have")
        embedding = module in embeddings
        fan = bool(config.get("fan_in_fan_out")) and not embedding
        (a_key, a_shape), (b_key, b_shape) = parts["A"], parts["B"]
        rows, cols = b_shape[0], a_shape[1]
        found = (cols, rows) if (embedding or fan) else (rows, cols)
        if a_shape[0] != b_shape[1] or tuple(found) != tuple(base.shape(target)):
            raise CheckpointError(
                f"LoRA adapter {path}: tensor {target}: B·A gives shape {tuple(found)} (A {tuple(a_shape)}, "
                f"B {tuple(b_shape)}) but the base tensor has shape {base.shape(target)}"
            )
        r = _pattern(config.get("rank_pattern") or {}, module, r_default)
        alpha = _pattern(config.get("alpha_pattern") or {}, module, alpha_default)
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        modules[target] = LoraModule(target, a_key, b_key, scaling, embedding, fan)
    return modules, replaced


def check_adapter_base(path: Path, base: TensorSource) -> None:
    """Raise ``CheckpointError`` if the adapter at ``path`` does not fit ``base`` (headers only)."""
    lora_modules(path, base)


class LoraSource:
    """A LoRA adapter directory seen as a full checkpoint: the base's tensors plus each adapter's ΔW."""

    def __init__(self, path: Path, base_source: TensorSource):
        self.path = Path(path)
        self.base = base_source
        self.modules, self.replaced = lora_modules(self.path, base_source)
        self._file = adapter_file(self.path)
        self._handle: Any = None

    def names(self) -> list[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def dtype(self, name: str) -> str:
        return self.base.dtype(name)

    def _read(self, key: str) -> Any:
        from safetensors import safe_open

        if self._handle is None:
            self._handle = safe_open(str(self._file), framework="pt")
        return self._handle.get_tensor(key)

    def delta(self, name: str) -> Any:
        """ΔW for ``name`` in float32, or None when the adapter leaves it alone."""
        module = self.modules.get(name)
        if module is None:
            return None
        a = self._read(module.a_key).float()
        b = self._read(module.b_key).float()
        delta = (b @ a) * module.scaling
        return delta.T if (module.embedding or module.fan_in_fan_out) else delta

    def get(self, name: str) -> Any:
        base = self._read(self.replaced[name]) if name in self.replaced else self.base.get(name)
        delta = self.delta(name)
        if delta is None:
            return base
        return base.float() + delta
