"""Resolving a model reference (``zoo:NAME``, ``zoo-bpe:NAME``, a local directory, a hub id) to a directory and
an identity.

The identity goes into every cell key, so a changed checkpoint can never be mistaken for a done cell, while a
touched, copied or moved one keeps its cells: a hub model is identified by its resolved commit, a zoo model by
the content digest its zoo's manifest records, a local directory by the content digest of its weights and
configs (``study.identity``). Nothing is downloaded: a hub id must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from study.config import ModelRef
from study.errors import CheckpointError
from study.identity import content_digest
from study.lora import is_lora_dir
from study.zoo.names import PREFIXES, split_model_ref

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
        return is_lora_dir(self.path)


def digest(*parts: object) -> str:
    """A stable hex digest of JSON-able parts (Python's ``hash()`` changes between processes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _resolve_zoo(ref: ModelRef, zoo_root: Path | None) -> ResolvedModel:
    from study.zoo import load_zoo

    family, name = split_model_ref(ref.model) or ("char", ref.model)
    zoo = load_zoo(zoo_root, family=family)
    return ResolvedModel(ref, zoo.model(name), zoo.model_digest(name))


def _resolve_hub(ref: ModelRef) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(ref.model, revision=ref.revision, local_files_only=True))
    except Exception:
        raise CheckpointError(
            f"{ref.label}: not a local directory and not in the local Hugging Face cache (runs never download): "
            f"download it first with `merge-study fetch SWEEP` (every hub model of the sweep, checked before any "
            f"byte), or give a local path"
        ) from None
    return ResolvedModel(ref, path, f"hub:{ref.model}@{path.name}")


def resolve_model(ref: ModelRef, zoo_root: Path | None = None) -> ResolvedModel:
    """Find a model's directory without loading it; raises ``CheckpointError`` naming the reference."""
    if split_model_ref(ref.model) is not None:
        return _resolve_zoo(ref, zoo_root)
    path = _local_dir(ref)
    if path is None:
        return _resolve_hub(ref)
    return ResolvedModel(ref, path, content_digest(path))


def is_hub_ref(ref: ModelRef) -> bool:
    """Whether a reference names a hub model (``org/name`` that is not an existing path), not the zoo or a
    local directory."""
    path = Path(ref.model).expanduser()
    return not (ref.model.startswith((".", "/", "~", *PREFIXES.values())) or path.exists() or ref.model.count("/") != 1)


def _local_dir(ref: ModelRef) -> Path | None:
    """The checked local directory a reference names, or None when it names a hub model."""
    if is_hub_ref(ref):
        return None
    path = Path(ref.model).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{ref.model}: checkpoint directory not found")
    if not (path / "config.json").is_file() and not is_lora_dir(path):
        raise CheckpointError(f"{ref.model}: no config.json or adapter_config.json: not a Hugging Face model directory")
    return path.resolve()


def model_dir(reference: str, zoo_root: Path | None = None) -> Path:
    """The directory of a model named on the command line (``merge --base zoo:base``), found as
    ``resolve_model`` finds it but without an identity: a one-off merge needs none, and a local directory's
    would read every weight file once more."""
    ref = ModelRef(model=reference)
    zoo_ref = split_model_ref(reference)
    if zoo_ref is not None:
        from study.zoo import load_zoo

        return load_zoo(zoo_root, family=zoo_ref[0]).model(zoo_ref[1])
    return _local_dir(ref) or _resolve_hub(ref).path
