"""Model shapes and configs for the zoo: Llama (the default) and Qwen3 (q_norm/k_norm) architectures.

Choices, deliberately like current open checkpoints rather than the smallest thing that trains:

- Grouped-query attention (4 query heads sharing 2 KV heads): merge code must handle ``k_proj``/``v_proj``
  narrower than ``q_proj``, as in Llama 3 and Qwen3.
- Untied embeddings: ``lm_head`` is its own tensor, as in Llama 3 8B and Qwen3 8B, so merge methods meet the
  input embedding and the output head as two tensors with different roles (mergekit treats both specially).
  With an ~80-symbol vocabulary untying costs ~10k parameters. ``tie_word_embeddings=True`` is available to
  the tiny families so tests can cover the tied case too.
- fp32 weights: fine-tuning deltas here are ~1e-4 to 1e-3 on weights of ~0.1, close to bf16's resolution
  (2^-8 relative), so bf16 storage would blur the task vectors that merge methods operate on.
- RoPE with 512 positions: prompts are < 40 characters, but lm-eval subtracts ``max_gen_toks`` from the
  context window, so the window must exceed any generation budget a sweep may set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

ARCHITECTURES = ("llama", "qwen3")


@dataclass(frozen=True)
class Shape:
    """Size of a model; ``head_dim = hidden / heads``."""

    hidden: int = 128
    intermediate: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 512
    rope_theta: float = 10000.0
    tied: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_arch(arch: str) -> str:
    """``arch`` itself, or a UserError naming the architectures the zoo can build."""
    if arch not in ARCHITECTURES:
        from study.errors import UserError

        raise UserError(f"unknown zoo architecture {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    return arch


def make_config(shape: Shape, arch: str, tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
    """A ``LlamaConfig`` or ``Qwen3Config`` for ``shape``, with the tokenizer's special-token ids."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=shape.max_positions,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if check_arch(arch) == "llama":
        return LlamaConfig(**common)
    return Qwen3Config(**common, use_sliding_window=False)


def init_model(shape: Shape, arch: str, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """A freshly initialised fp32 causal LM; ``seed`` fixes the initial weights."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(shape, arch, tokenizer), dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    return model


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Any, dtype: str = "float32"
) -> None:
    """Write ``model`` (safetensors, cast to ``dtype``) and ``tokenizer`` as one Hugging Face directory."""
    import torch
    from transformers.utils import logging

    target = getattr(torch, dtype)
    if next(model.parameters()).dtype != target:
        model = model.to(target)
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if bars:
            logging.enable_progress_bar()
    tokenizer.save_pretrained(path)
