"""One hub model's metadata, read without downloading a weight file.

``probe`` asks the hub for the repo's commit, file list (with sizes) and model card data (``api/models/{id}/
revision/{rev}?blobs=true``), downloads ``config.json`` (a few kB, into the Hugging Face cache, where a fetch
would put it anyway) and reads every safetensors header with HTTP range requests
(``HfApi.get_safetensors_metadata``: the first 100 kB of each weight file, a second range only for a larger
header). That is enough to check a checkpoint against its base tensor by tensor before any weight is fetched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from study.config import ModelRef
from study.errors import UserError
from study.hub.client import endpoint, hub_api
from study.tensors import SAFETENSORS_DTYPES

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "chat_template.jinja", "chat_template.json",
)
"""Every file a Hugging Face tokenizer (fast or sentencepiece) and its chat template may be loaded from."""
CONFIG_FILES = ("config.json", "generation_config.json", "adapter_config.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class RemoteModel(BaseModel):
    """What the hub says about one model at one commit: enough to check it and to fetch it.

    ``files`` are the files a fetch downloads (weights the index or the single file names, configs, tokenizer
    files), with their sizes; other files of the repo (``*.bin``, ``original/``, ``onnx/``, the card) are left.
    ``tensors`` maps each tensor to its safetensors dtype code and shape, from the headers.
    """

    model_config = ConfigDict(frozen=True)
    label: str
    repo: str
    revision: str
    commit: str
    files: dict[str, int]
    config: dict[str, Any]
    tensors: dict[str, tuple[str, tuple[int, ...]]]
    card_base: list[str]
    gated: bool = False
    adapter: bool = False

    @property
    def size(self) -> int:
        return sum(self.files.values())


class HeaderSource:
    """A tensor source of names, shapes and dtypes only, from safetensors headers read over HTTP: what
    ``study.compat`` needs to check a checkpoint (``get`` is never called: no tensor data was fetched)."""

    def __init__(self, model: RemoteModel):
        self.path = Path(model.label)
        self._tensors = model.tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name][1])

    def dtype(self, name: str) -> str:
        code = self._tensors[name][0]
        return SAFETENSORS_DTYPES.get(code, code.lower())

    def get(self, name: str) -> Any:
        raise NotImplementedError("a header-only source holds no tensor data")


def normalise_id(repo: str) -> str:
    """A ``base_model`` value as a repo id: cards sometimes give the page URL (``https://huggingface.co/org/name``)."""
    repo = repo.strip().rstrip("/")
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "hf.co/", f"{endpoint()}/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    return repo


def card_bases(card_data: Any) -> list[str]:
    """The ``base_model`` entries of a model card's metadata (a string or a list), as repo ids."""
    value = getattr(card_data, "base_model", None) if card_data is not None and not isinstance(card_data, dict) \
        else (card_data or {}).get("base_model")
    values = [value] if isinstance(value, str) else list(value or [])
    return [normalise_id(v) for v in values if isinstance(v, str) and v.strip()]


def probe(ref: ModelRef, commit: str | None = None) -> RemoteModel:
    """The hub's metadata of ``ref`` at ``commit`` (a pinned one), else at its revision (``main`` when none).

    Raises ``huggingface_hub``'s errors (``study.hub.client.explain`` words them) and ``UserError`` for a repo
    that is not a transformers model with safetensors weights.
    """
    from huggingface_hub import hf_hub_download

    api = hub_api()
    info = api.model_info(ref.model, revision=commit or ref.revision or "main", files_metadata=True)
    sha = info.sha
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    adapter = "adapter_config.json" in sizes and "config.json" not in sizes
    config_name = "adapter_config.json" if adapter else "config.json"
    if config_name not in sizes:
        raise UserError(f"{ref.label}: no config.json in the repo at {sha[:12]}: not a transformers model")
    config = json.loads(Path(hf_hub_download(ref.model, config_name, revision=sha, endpoint=endpoint())).read_text())
    if adapter:
        if ADAPTER_WEIGHTS not in sizes:
            raise UserError(f"{ref.label}: a LoRA adapter without {ADAPTER_WEIGHTS}: merges read safetensors only")
        header = api.parse_safetensors_file_metadata(ref.model, ADAPTER_WEIGHTS, revision=sha)
        weights, headers = [ADAPTER_WEIGHTS], [header]
    else:
        meta = api.get_safetensors_metadata(ref.model, revision=sha)
        weights = sorted(set(meta.weight_map.values())) + (["model.safetensors.index.json"] if meta.sharded else [])
        headers = list(meta.files_metadata.values())
    tensors = {name: (t.dtype, tuple(t.shape)) for h in headers for name, t in h.tensors.items()}
    wanted = weights + [f for f in (*CONFIG_FILES, *TOKENIZER_FILES) if f in sizes]
    return RemoteModel(label=ref.label, repo=ref.model, revision=ref.revision or "main", commit=sha,
                       files={f: sizes.get(f, 0) for f in wanted}, config=config, tensors=tensors,
                       card_base=card_bases(info.card_data), gated=bool(info.gated), adapter=adapter)
