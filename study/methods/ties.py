"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al. 2023, arXiv 2306.01708).

Per methods.md: keep exactly max(1, ⌊density·n⌋) of each task vector's largest-magnitude entries, elect a sign
per entry, average the agreeing entries (or sum them, ``normalize: false``), add λ times the result to the base.
With ``trim_scope: tensor`` (the default, as mergekit and the study's fork) ranking is within each tensor; with
``trim_scope: global`` (the paper) it is over model i's whole flattened task vector, whose threshold a prepass
finds. Equal magnitudes at the threshold are kept lowest index first (``common.TopK``): in bf16 checkpoints
many task-vector entries share a magnitude, and keeping every |τ| ≥ threshold kept 26–37% at density 0.2.

The global threshold is found exactly by a two-pass radix select on the float32 bit patterns of |τᵢ| (for
non-negative floats the bit pattern orders like the value): pass one counts the high 16 bits of every entry
into 32768 bins per model, pass two resolves the low 16 bits inside the one bin that holds the cut, which also
gives how many entries equal to the threshold are kept. When that is fewer than all of them, a third pass
hands each tensor its share, in the base's tensor order. Memory is O(k · 65536) counters plus k integers per
tensor, not one model's magnitudes; each pass streams the checkpoints once.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from study.methods.common import KEEP_ALL, TopK, blocks, disjoint_parts, keep_count
from study.methods.task_vector_family import (
    GLOBAL_CUTS,
    GLOBAL_QUOTAS,
    MERGED_LAMBDA,
    Recipe,
    SignElection,
    TopMagnitude,
    merged_delta,
    thinned_blocks,
)
from study.methods.schema import merge_method

HIGH_BINS = 1 << 15
LOW_BINS = 1 << 16


def _magnitude_bits(base: Tensor, tensor: Tensor) -> Tensor:
    return (tensor - base).abs().flatten().contiguous().view(torch.int32).long()


def _cut(hist: Tensor, rank: int) -> tuple[int, int]:
    """The bin holding the ``rank``-th largest entry (1-based) and that entry's rank within the bin."""
    from_top = torch.flip(hist, [0]).cumsum(0)
    pos = int(torch.searchsorted(from_top, torch.tensor(rank, dtype=from_top.dtype)))
    above = int(from_top[pos - 1]) if pos > 0 else 0
    return len(hist) - 1 - pos, rank - above


def global_cuts(inputs: Any, density: float) -> list[TopK]:
    """Per model, the ``TopK`` that keeps exactly ``max(1, ⌊density·n⌋)`` entries of its whole task vector.

    ``value`` is the magnitude of the last kept entry and ``ties`` how many entries equal to it are kept (None:
    all of them), counted in the order of the base's tensors and, within a tensor, by flat index.
    """
    k = len(inputs.checkpoints)
    high = [torch.zeros(HIGH_BINS, dtype=torch.long) for _ in range(k)]
    total = [0] * k
    for _, base, tensors in inputs.iter_tensors():
        if not base.is_floating_point():
            continue
        for i, t in enumerate(tensors):
            bits = _magnitude_bits(base, t)
            high[i] += torch.bincount(bits >> 16, minlength=HIGH_BINS).cpu()
            total[i] += bits.numel()
    keep = [keep_count(density, n) for n in total]
    cuts = [_cut(h, r) for h, r in zip(high, keep)]
    low = [torch.zeros(LOW_BINS, dtype=torch.long) for _ in range(k)]
    for _, base, tensors in inputs.iter_tensors():
        if not base.is_floating_point():
            continue
        for i, t in enumerate(tensors):
            bits = _magnitude_bits(base, t)
            inside = bits[(bits >> 16) == cuts[i][0]] & 0xFFFF
            low[i] += torch.bincount(inside, minlength=LOW_BINS).cpu()
    out = []
    for i in range(k):
        if keep[i] >= total[i]:
            out.append(KEEP_ALL)
            continue
        low_bin, ties = _cut(low[i], cuts[i][1])
        pattern = torch.tensor([(cuts[i][0] << 16) | low_bin], dtype=torch.int32)
        value = float(pattern.view(torch.float32)[0])
        out.append(TopK(value, None if ties == int(low[i][low_bin]) else ties))
    return out


def tensor_quotas(inputs: Any, cuts: list[TopK]) -> dict[str, list[int | None]]:
    """How many of model i's entries equal to its global threshold each tensor keeps: the first ``ties`` of
    them in the base's tensor order (a third streaming pass, only when some model has ties to break)."""
    left = [c.ties for c in cuts]
    quotas: dict[str, list[int | None]] = {}
    if all(t is None for t in left):
        return quotas
    for name, base, tensors in inputs.iter_tensors():
        if not base.is_floating_point():
            continue
        row: list[int | None] = []
        for i, t in enumerate(tensors):
            if left[i] is None:
                row.append(None)
                continue
            equal = int(((t - base).abs() == cuts[i].value).sum())
            row.append(min(left[i], equal))
            left[i] -= row[-1]
        quotas[name] = row
    return quotas


def ties_prepass(inputs: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The global trim (each model's ``TopK`` and its per-tensor tie quotas) when ``trim_scope: global``."""
    if params.get("trim_scope", "tensor") != "global":
        return {}
    cuts = global_cuts(inputs, float(params["density"]))
    return {GLOBAL_CUTS: cuts, GLOBAL_QUOTAS: tensor_quotas(inputs, cuts)}


def ties_recipe(density: float, trim_scope: str = "tensor", normalize: bool = True) -> Recipe:
    """TIES in the task-vector family: the exact magnitude trim (per tensor or global), then sign election and
    the disjoint merge (a mean over the agreeing weights when ``normalize``)."""
    return Recipe(TopMagnitude(density, trim_scope), SignElection(normalize))  # type: ignore[arg-type]


def ties_delta(
    base: Tensor,
    tensors: list[Tensor],
    weight: list[float],
    density: float,
    trim_scope: str = "tensor",
    context: dict[str, Any] | None = None,
    tensor_name: str | None = None,
    normalize: bool = True,
) -> Tensor:
    """Steps 1–3 of TIES: the merged task vector before λ (shared with subspace boosting and AIM), block by
    block: only the cuts need the whole tensor (``task_vector_family.TopMagnitude``)."""
    return merged_delta(base, tensors, ties_recipe(density, trim_scope, normalize), weight, tensor_name, context)


def ties_parts(
    base: Tensor,
    tensors: list[Tensor],
    weight: list[float],
    density: float,
    trim_scope: str = "tensor",
    context: dict[str, Any] | None = None,
    tensor_name: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Steps 1–3 of TIES without the division: the agreeing entries' weighted sum and the agreeing models'
    weights, per entry (``common.disjoint_parts``), for a caller that transforms the sum before normalising."""
    total, norm = torch.empty_like(base), torch.empty_like(base)
    flat_total, flat_norm = total.view(-1), norm.view(-1)
    trim = TopMagnitude(density, trim_scope)  # type: ignore[arg-type]
    for block, rows in thinned_blocks(base, tensors, trim, tensor_name, context):
        flat_total[block], flat_norm[block] = disjoint_parts(torch.stack(rows), weight)
    return total, norm


NORMALIZE_HELP = (
    "divide each entry by the summed weights of the models that agree with its elected sign (mergekit's "
    "normalize, true in mergekit's ties and the study fork); false keeps the agreeing entries' weighted sum"
)
DENSITY_HELP = (
    "fraction of each task vector kept by magnitude: exactly max(1, floor(density*n)) entries, equal magnitudes "
    "at the threshold kept lowest index first (mergekit's default 1.0 keeps all)"
)
TRIM_SCOPE_HELP = (
    "what n counts: tensor = this tensor (mergekit, the study fork); global = model i's whole task vector "
    "(the paper), ties broken in the base's tensor order"
)
TIES_RANGES = {
    "density": {"low": 0.0, "low_open": True, "high": 1.0, "help": DENSITY_HELP},
    "trim_scope": {"help": TRIM_SCOPE_HELP},
    "normalize": {"help": NORMALIZE_HELP},
}


@merge_method(
    "ties",
    reference="Yadav et al. 2023, TIES-Merging, https://arxiv.org/abs/2306.01708",
    version=2,
    ranges={**TIES_RANGES,
            "weight": {"help": "per-model weight w_i: scales model i's trimmed task vector in the sign election, "
                               "in the agreeing sum and in the divisor"},
            "lambda": MERGED_LAMBDA},
    prepass=ties_prepass,
    mergekit_note="Same as mergekit's ties (normalize true or false, rescale false) except: among equal magnitudes "
    "at the trim threshold ours keeps the lowest flat indices, mergekit's unstable argsort whichever its sort "
    "kernel puts first (they differ on bf16 checkpoints and agree once that sort is stable); one density for all "
    "models (mergekit's is per model, default 1.0 = no trim); trim_scope: global (the paper's) is ours only. The "
    "sign is elected on the weighted trimmed deltas sum(w_i*trimmed tau_i), as mergekit does (the paper and PEFT "
    "elect on the unweighted ones: the same with equal weights). mergekit's rescale (L1-norm) is not offered.",
)
def ties(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.2,
    lambda_: float = 1.0,
    trim_scope: Literal["tensor", "global"] = "tensor",
    normalize: bool = True,
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Trim each task vector to its top-``density`` entries, elect signs, average agreeing entries."""
    return base + lambda_ * ties_delta(base, tensors, weight, density, trim_scope, context, tensor_name, normalize)


STORED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def ties_stored(
    out: Tensor,
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.2,
    lambda_: float = 1.0,
    trim_scope: Literal["tensor", "global"] = "tensor",
    normalize: bool = True,
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> bool:
    """``ties`` from the stored-dtype CPU inputs into ``out`` (the driver's ``stored_kernel``), bit for bit: the
    checkpoints stay as stored (bf16 / fp16 / fp32 convert to float32 exactly, so ``t - base`` on them equals
    it on float32 copies) and are converted one model or one block at a time, and ``base + λ·delta`` runs block
    by block: about k float32 copies of the tensor less in memory. False for other dtypes (the driver's path)."""
    if any(t.dtype not in STORED_DTYPES for t in [base, *tensors]):
        return False
    b = base.to(torch.float32)
    delta = merged_delta(b, tensors, ties_recipe(density, trim_scope, normalize), weight, tensor_name, context)
    flat_out, flat_b, flat_delta = out.view(-1), b.reshape(-1), delta.view(-1)
    for block in blocks(flat_out.numel(), "cpu"):
        flat_out[block] = flat_b[block] + lambda_ * flat_delta[block]
    return True


ties.stored_kernel = ties_stored  # type: ignore[attr-defined]
