"""Resolving a model reference (``zoo:NAME``, a local directory, a hub id) to a directory and an identity.

The identity goes into every cell key, so a changed checkpoint can never be mistaken for a done cell: a hub
model is identified by its resolved commit, a zoo model by the zoo's spec hash (the zoo is deterministic), a
local directory by the names, sizes and modification times of its files. Nothing is downloaded: a hub id must
already be in the local Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from study.config import ModelRef
from study.errors import CheckpointError

ZOO_PREFIX = "zoo:"


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: where its files are and what exactly it is."""

    ref: ModelRef
    path: Path
    identity: str

    @property
    def label(self) -> str:
        return self.ref.label

    @property
    def is_lora(self) -> bool:
        return (self.path / "adapter_config.json").is_file()


def digest(*parts: object) -> str:
    """A stable hex digest of JSON-able parts (Python's ``hash()`` changes between processes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def directory_identity(path: Path) -> str:
    """Names, sizes and mtimes of a model directory's files: cheap, and changes whenever a file does."""
    entries = sorted(
        (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in path.rglob("*")
        if f.is_file() and not f.name.startswith(".")
    )
    return "dir:" + digest(entries)[:32]


def _resolve_zoo(ref: ModelRef, zoo_root: Path | None) -> ResolvedModel:
    from study.zoo import load_zoo

    zoo = load_zoo(zoo_root)
    name = ref.model[len(ZOO_PREFIX):]
    return ResolvedModel(ref, zoo.model(name), f"zoo:{zoo.path.name}:{name}")


def _resolve_hub(ref: ModelRef) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(ref.model, revision=ref.revision, local_files_only=True))
    except Exception:
        raise CheckpointError(
            f"{ref.label}: not a local directory and not in the local Hugging Face cache (runs never download): "
            f"download it first (`huggingface-cli download {ref.model}`) or give a local path"
        ) from None
    return ResolvedModel(ref, path, f"hub:{ref.model}@{path.name}")


def resolve_model(ref: ModelRef, zoo_root: Path | None = None) -> ResolvedModel:
    """Find a model's directory without loading it; raises ``CheckpointError`` naming the reference."""
    if ref.model.startswith(ZOO_PREFIX):
        return _resolve_zoo(ref, zoo_root)
    path = Path(ref.model).expanduser()
    looks_local = ref.model.startswith((".", "/", "~")) or path.exists() or ref.model.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise CheckpointError(f"{ref.model}: checkpoint directory not found")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise CheckpointError(f"{ref.model}: no config.json or adapter_config.json: not a Hugging Face model directory")
        return ResolvedModel(ref, path.resolve(), directory_identity(path))
    return _resolve_hub(ref)
