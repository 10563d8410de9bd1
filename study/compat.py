"""Can these checkpoints be merged with this base? Checked from config.json and safetensors headers only.

No tensor data is read, so a sweep fails in seconds, before any merge, with one error naming the checkpoint,
the field or tensor, and what was expected vs found. Checked: architecture (``model_type``,
``architectures``), layer count and the hidden sizes, head counts, tied embeddings, vocabulary size, and for
every base tensor its presence, shape and a floating dtype in the checkpoint. A checkpoint stored in another
float dtype than the base (a bf16 fine-tune of an fp32 base) is accepted: methods compute in float32 and the
result takes the base's dtype. Extra vocabulary rows pass only with ``vocab_mismatch="truncate"``. LoRA
adapters are checked against the base (declared base, target tensors, B·A shapes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from study.errors import CheckpointError
from study.lora import check_adapter_base, is_lora_dir
from study.tensors import SafetensorsSource, is_embedding, is_float_dtype

CONFIG_FIELDS = (
    "model_type", "architectures", "num_hidden_layers", "hidden_size", "intermediate_size",
    "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings",
)


def _config(model_dir: Path) -> dict[str, Any]:
    file = model_dir / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: invalid JSON: {exc}") from None
    return text_config(config)


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config: a multimodal model's ``text_config``, else the config itself."""
    return config.get("text_config", config) if "num_hidden_layers" not in config else config


def _check_config(base: dict[str, Any], ckpt: dict[str, Any], where: Path, vocab_mismatch: str) -> None:
    for key in CONFIG_FIELDS:
        if key in base and key in ckpt and base[key] != ckpt[key]:
            raise CheckpointError(f"checkpoint {where}: config {key} is {ckpt[key]!r}, the base has {base[key]!r}")
    b_vocab, c_vocab = base.get("vocab_size"), ckpt.get("vocab_size")
    if b_vocab is not None and c_vocab is not None and b_vocab != c_vocab:
        if c_vocab > b_vocab and vocab_mismatch == "truncate":
            return
        hint = " (set merge.vocab_mismatch: truncate to drop the extra rows)" if c_vocab > b_vocab else ""
        raise CheckpointError(f"checkpoint {where}: config vocab_size is {c_vocab}, the base has {b_vocab}{hint}")


def _check_tensors(base: Any, ckpt: Any, where: Path, vocab_mismatch: str) -> None:
    names = set(ckpt.names())
    for name in base.names():
        if name not in names:
            raise CheckpointError(f"checkpoint {where}: tensor {name} is missing (the base has it)")
        b_shape, c_shape = tuple(base.shape(name)), tuple(ckpt.shape(name))
        if b_shape != c_shape:
            extra_rows = (
                is_embedding(name) and c_shape[1:] == b_shape[1:] and c_shape[0] > b_shape[0]
            )
            if not (extra_rows and vocab_mismatch == "truncate"):
                hint = " (extra vocabulary rows: vocab_mismatch: truncate drops them)" if extra_rows else ""
                raise CheckpointError(f"checkpoint {where}: tensor {name} has shape {c_shape}, expected {b_shape}{hint}")
        b_dtype, c_dtype = base.dtype(name), ckpt.dtype(name)
        if is_float_dtype(b_dtype) and not is_float_dtype(c_dtype):
            raise CheckpointError(
                f"checkpoint {where}: tensor {name} has dtype {c_dtype}, expected a float dtype like the base's "
                f"{b_dtype} (quantised checkpoints cannot be merged)"
            )


def check_pair(base_config: dict[str, Any], base: Any, ckpt_config: dict[str, Any], ckpt: Any, where: str | Path,
               *, vocab_mismatch: str = "refuse") -> None:
    """``check_compatible``'s checks of one full checkpoint, on configs and tensor sources already in hand: the hub
    checks (``study.hub.checks``) pass sources built from safetensors headers read by HTTP range requests."""
    _check_config(text_config(base_config), text_config(ckpt_config), where, vocab_mismatch)
    _check_tensors(base, ckpt, where, vocab_mismatch)


def check_compatible(base_dir: Path, checkpoint_dirs: list[Path], *, vocab_mismatch: str = "refuse") -> None:
    """Raise ``CheckpointError`` for the first checkpoint that cannot be merged with the base."""
    base_dir = Path(base_dir)
    base_config = _config(base_dir)
    base = SafetensorsSource(base_dir)
    for ckpt_dir in map(Path, checkpoint_dirs):
        if is_lora_dir(ckpt_dir):
            check_adapter_base(ckpt_dir, base)
            continue
        _check_config(base_config, _config(ckpt_dir), ckpt_dir, vocab_mismatch)
        _check_tensors(base, SafetensorsSource(ckpt_dir), ckpt_dir, vocab_mismatch)
