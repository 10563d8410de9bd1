"""Reading checkpoints one tensor at a time.

A ``TensorSource`` is what the merge driver streams from: names, shapes and dtypes come from safetensors
headers (no tensor data is read to validate), and ``get`` reads a single tensor. Sharded checkpoints
(``model.safetensors.index.json``) are one source. Other kinds of checkpoint (LoRA adapters over a base)
implement the same four methods.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Protocol

from study.errors import CheckpointError

_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


class TensorSource(Protocol):
    path: Path

    def names(self) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def dtype(self, name: str) -> str: ...
    def get(self, name: str): ...  # -> torch.Tensor


def read_safetensors_header(file: Path) -> dict[str, dict]:
    """The JSON header of a safetensors file: ``{name: {dtype, shape, data_offsets}}``; no data is read."""
    try:
        with open(file, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{file}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise CheckpointError(f"{file}: not a safetensors file (header length {n})")
            header = json.loads(fh.read(n))
        size = file.stat().st_size
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: unreadable safetensors header: {exc}") from None
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{file}: truncated safetensors file ({size} bytes, header promises {8 + n + end}): re-download or rebuild it"
        )
    return header


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model directory, shards included."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    files = sorted(model_dir.glob("*.safetensors"))
    files = [f for f in files if not f.name.startswith("adapter_model")]
    if not files:
        has_bin = any(model_dir.glob("*.bin"))
        hint = " (only PyTorch .bin weights: convert them to safetensors)" if has_bin else ""
        raise CheckpointError(f"{model_dir}: no *.safetensors weights found{hint}")
    return files


class SafetensorsSource:
    """A Hugging Face model directory (one or several safetensors shards), read lazily by tensor name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: checkpoint directory not found")
        self._where: dict[str, Path] = {}
        self._meta: dict[str, dict] = {}
        for file in weight_files(self.path):
            if not file.is_file():
                raise CheckpointError(f"{file}: shard listed in the index is missing")
            for name, meta in read_safetensors_header(file).items():
                self._where[name] = file
                self._meta[name] = meta
        self._handles: dict[Path, object] = {}

    def names(self) -> list[str]:
        return list(self._meta)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._meta[name]["shape"])

    def dtype(self, name: str) -> str:
        return _DTYPE_NAMES.get(self._meta[name]["dtype"], self._meta[name]["dtype"])

    def get(self, name: str):
        from safetensors import safe_open

        file = self._where[name]
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"{file}: cannot open: {exc}") from None
            self._handles[file] = handle
        try:
            return handle.get_tensor(name)  # type: ignore[attr-defined]
        except Exception as exc:
            raise CheckpointError(f"{file}: cannot read tensor {name}: {exc}") from None

    def close(self) -> None:
        self._handles.clear()


def open_source(path: Path, base: "TensorSource | None" = None) -> TensorSource:
    """A tensor source for a model directory, or for a LoRA adapter directory over ``base``."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from study.lora import LoraSource

        if base is None:
            raise CheckpointError(f"{path}: a LoRA adapter needs its base model to be merged")
        return LoraSource(path, base)
    return SafetensorsSource(path)
