"""AIM: activation-informed merging (Nobari et al. 2025, arXiv 2502.02421).

A post-processing step on another method's merge. The base model is run on calibration text and, for every
``nn.Linear`` input, the mean absolute activation per input channel is recorded and normalised by the layer's
maximum to aⱼ ∈ [0, 1]. Channels the base relies on most are protected: column j of that layer's merged delta
Δ = θ_merged − θ₀ is scaled by (1 − aⱼ·(1 − ω)), so ω = 1 leaves the inner merge unchanged and ω = 0 keeps
the base's weights on its most active channel. Embeddings, ``lm_head`` (an output projection that is the
embedding when tied; methods.md groups it with embeddings) and every non-linear tensor keep the inner merge.

Calibration: ``calibration: zoo`` (default) draws 64 sequences of the mixture the zoo's base trained on (its
skill weights, its step-by-step share, the half of each table it saw) from a seeded generator; any other value
is the path of a
UTF-8 text file whose first 64 non-empty lines are the sequences. Activations are cached in-process per
(base directory, calibration, device), so a sweep runs the base once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from study.errors import MethodError
from study.methods.common import task_vectors, weighted_sum
from study.methods.schema import merge_method
from study.methods.ties import TIES_RANGES, ties_delta, ties_prepass

SEQUENCES = 64
MAX_TOKENS = 512
SKIPPED_LINEAR = ("lm_head",)
_CACHE: dict[tuple[str, str, str], dict[str, Tensor]] = {}


def calibration_texts(calibration: str, n: int = SEQUENCES) -> list[str]:
    """The calibration sequences named by ``calibration``: ``zoo`` (drawn from the mixture the zoo's base was
    trained on, the study's "mini zoo corpus") or a text file (its first ``n`` non-empty lines)."""
    if calibration == "zoo":
        from study.zoo.skills import mixture, rng
        from study.zoo.spec import BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT

        draw, r = mixture(BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT), rng("aim-calibration")
        return ["".join(draw(r)) for _ in range(n)]
    path = Path(calibration)
    if not path.is_file():
        raise MethodError(f"method 'aim', parameter 'calibration': {path} is not a text file (or use 'zoo')")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise MethodError(f"method 'aim', parameter 'calibration': {path} has no non-empty line")
    return lines[:n]


def channel_activations(model_dir: Path, texts: list[str], device: str = "cpu") -> dict[str, Tensor]:
    """``{"<module>.weight": a}`` for every ``nn.Linear`` but lm_head: mean |input| per channel, scaled to [0, 1]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.quiet import no_loading_bar

    with no_loading_bar():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def record(name: str):
        def hook(_module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float()
            flat = x.reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + flat.abs().sum(0)
            counts[name] = counts.get(name, 0) + flat.shape[0]

        return hook

    handles = [
        module.register_forward_pre_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(s in name for s in SKIPPED_LINEAR)
    ]
    try:
        with torch.no_grad():
            for text in texts:
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_TOKENS).input_ids
                model(input_ids=ids.to(device))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, total in sums.items():
        mean = (total / counts[name]).cpu()
        peak = float(mean.max())
        out[f"{name}.weight"] = mean / peak if peak > 0 else torch.zeros_like(mean)
    return out


def aim_prepass(inputs: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The inner method's prepass, plus the base's calibration activations (cached per base and text)."""
    context = ties_prepass(inputs, params) if params.get("inner_method") == "ties" else {}
    key = (str(Path(inputs.base.path).resolve()), str(params.get("calibration", "zoo")), str(inputs.device))
    if key not in _CACHE:
        _CACHE[key] = channel_activations(Path(inputs.base.path), calibration_texts(key[1]), inputs.device)
    return {**context, "aim_activations": _CACHE[key]}


@merge_method(
    "aim",
    reference="Nobari et al. 2025, Activation-Informed Merging of Large Language Models, "
    "https://arxiv.org/abs/2502.02421",
    version=2,
    ranges={**TIES_RANGES, "omega": {"low": 0.0, "high": 1.0}},
    prepass=aim_prepass,
)
def aim(
    base: Tensor,
    tensors: list[Tensor],
    *,
    inner_method: Literal["ties", "task_arithmetic"] = "ties",
    omega: float = 0.4,
    calibration: str = "zoo",
    lambda_: float = 1.0,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.2,
    trim_scope: Literal["tensor", "global"] = "tensor",
    normalize: bool = True,
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Merge with the inner method, then shrink the delta on the base's most active input channels.

    ``lambda``, ``weight``, ``density``, ``trim_scope`` and ``normalize`` are the inner method's (the last three
    only for ``ties``).
    """
    if inner_method == "ties":
        delta = lambda_ * ties_delta(base, tensors, weight, density, trim_scope, context, tensor_name, normalize)
    else:
        delta = lambda_ * weighted_sum(task_vectors(base, tensors), weight)
    activations = (context or {}).get("aim_activations")
    if activations is None:
        raise RuntimeError(f"aim needs the prepass's calibration activations (tensor {tensor_name})")
    a = activations.get(tensor_name or "")
    if a is None or base.dim() != 2:
        return base + delta
    if a.shape[0] != base.shape[1]:
        raise MethodError(
            f"aim: tensor {tensor_name} has {base.shape[1]} input channels but calibration saw {a.shape[0]}"
        )
    return base + delta * (1 - a.to(base.device) * (1 - omega))
