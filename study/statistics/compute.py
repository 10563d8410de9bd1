"""Running one model on calibration text to get one statistic: forward hooks on ``nn.Linear`` inputs (Gram
matrices, mean absolute activations) or a backward pass per sequence (diagonal Fisher).

The model is the base's architecture and tokenizer with the checkpoint's tensors loaded over it, so a LoRA
adapter (seen through its ``TensorSource`` as full tensors) is run like a full checkpoint. One model is in
memory at a time, with its statistic: a caller computes the checkpoints one after another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from study.errors import MethodError

SKIPPED_LINEAR = ("lm_head",)
"""The output projection is the embedding when tied; methods.md groups it with embeddings (no input statistic)."""


def load_model(base_dir: Path, source: Any | None, device: str) -> tuple[Any, Any]:
    """The base's model in float32 (and its tokenizer), with ``source``'s tensors loaded over it (None: the base)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.quiet import no_loading_bar

    with no_loading_bar():
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if source is not None and Path(source.path).resolve() != Path(base_dir).resolve():
        state = {name: source.get(name) for name in source.names()}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise MethodError(f"statistics: {source.path} does not fit the base's architecture: "
                              f"{str(exc).splitlines()[0]}") from None
        tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - dict(model.named_parameters()).keys()
        if unexpected or set(missing) - tied:
            raise MethodError(f"statistics: {source.path} has tensors the base's architecture lacks or lacks some "
                              f"it has ({sorted(unexpected or set(missing) - tied)[:3]})")
        del state
    return model, tokenizer


def compute_statistic(statistic: str, model: Any, tokenizer: Any, texts: list[str], max_tokens: int,
                      device: str) -> dict[str, Tensor]:
    """``{"<tensor name>": statistic}`` for one model; see ``study.statistics.spec.StatisticKind``."""
    from study.evaluate import SMALL_MODEL_PARAMS
    from study.zoo.train import torch_threads

    encoded = [tokenizer(t, return_tensors="pt", truncation=True, max_length=max_tokens).input_ids.to(device)
               for t in texts]
    small = device == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    with torch_threads(1 if small else torch.get_num_threads()):  # tiny ops: sibling threads only wait
        if statistic == "fisher_diag":
            return _fisher(model, encoded)
        return _linear_inputs(model, encoded, gram=statistic == "gram")


def _linears(model: Any) -> list[tuple[str, Any]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not any(s in name for s in SKIPPED_LINEAR)]


def _linear_inputs(model: Any, encoded: list[Tensor], gram: bool) -> dict[str, Tensor]:
    """Per linear layer: the mean input Gram XᵀX/N (accumulated in float64) or the mean |x| per channel.

    The |x| path is AIM's version-2 computation operation for operation (float32 sums, one sequence at a
    time), so AIM's merges are bit-identical to what they were before this pass existed."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def record(name: str):
        def hook(_module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float()
            flat = x.reshape(-1, x.shape[-1])
            if gram:
                part = (flat.T @ flat).double()
                sums[name] = sums[name] + part if name in sums else part
            else:
                sums[name] = sums.get(name, 0) + flat.abs().sum(0)
            counts[name] = counts.get(name, 0) + flat.shape[0]

        return hook

    handles = [m.register_forward_pre_hook(record(name)) for name, m in _linears(model)]
    try:
        with torch.no_grad():
            for ids in encoded:
                model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return {f"{name}.weight": (total / counts[name]).float().cpu().contiguous() for name, total in sums.items()}


def _fisher(model: Any, encoded: list[Tensor]) -> dict[str, Tensor]:
    """Mean over sequences of the squared gradient of each sequence's mean token NLL (empirical Fisher, one
    sequence per backward pass as Matena & Raffel's per-example estimate). Sequences under 2 tokens have no
    loss and are skipped."""
    params = dict(model.named_parameters())
    acc = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    n = 0
    for ids in encoded:
        if ids.shape[-1] < 2:
            continue
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        for name, p in params.items():
            if p.grad is not None:
                acc[name].add_(p.grad.detach().float().square())
        n += 1
    model.zero_grad(set_to_none=True)
    if n == 0:
        raise MethodError("statistics: no calibration sequence has 2 tokens or more; no Fisher can be estimated")
    return {name: (a / n).cpu().contiguous() for name, a in acc.items()}
