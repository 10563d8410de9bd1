"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al. 2023, arXiv 2306.01708).

Per methods.md: keep the ``density`` fraction of each task vector's largest-magnitude entries, elect a sign
per entry, average the agreeing entries, add λ times the result to the base. With ``trim_scope: tensor``
(the default, as mergekit and the study's fork) ranking is within each tensor; with ``trim_scope: global``
(the paper) it is over model i's whole flattened task vector, whose threshold a prepass finds.

The global threshold is found exactly by a two-pass radix select on the float32 bit patterns of |τᵢ| (for
non-negative floats the bit pattern orders like the value): pass one counts the high 16 bits of every entry
into 32768 bins per model, pass two resolves the low 16 bits inside the one bin that holds the cut. Memory is
O(k · 65536) counters, not one model's magnitudes; each pass streams the checkpoints once.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from study.methods.common import blocks, disjoint_merge, top_magnitude_threshold
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


def global_thresholds(inputs: Any, density: float) -> list[float]:
    """Per model, the magnitude of the ``max(1, ⌊density·n⌋)``-th largest entry of its task vector."""
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
    keep = [max(1, int(density * n)) for n in total]
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
        low_bin, _ = _cut(low[i], cuts[i][1])
        pattern = torch.tensor([(cuts[i][0] << 16) | low_bin], dtype=torch.int32)
        out.append(float(pattern.view(torch.float32)[0]) if keep[i] < total[i] else 0.0)
    return out


def ties_prepass(inputs: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The global trim thresholds when ``trim_scope: global``; nothing otherwise."""
    if params.get("trim_scope", "tensor") != "global":
        return {}
    return {"ties_thresholds": global_thresholds(inputs, float(params["density"]))}


def trim_thresholds(
    base: Tensor, tensors: list[Tensor], density: float, trim_scope: str, context: dict[str, Any] | None, name: str | None
) -> Tensor:
    """TIES step 1 as one |τᵢ| threshold per model, shaped ``(T, 1)``: entries below it are trimmed.

    ``tensor`` scope: the ``max(1, ⌊density·n⌋)``-th largest |τᵢ| of this tensor (``kthvalue``, no sort);
    ``global`` scope: the prepass's threshold over model i's whole task vector.
    """
    if trim_scope == "tensor":
        values = [top_magnitude_threshold(t - base, density) for t in tensors]
        return torch.stack(values).view(-1, 1)
    thresholds = (context or {}).get("ties_thresholds")
    if thresholds is None:
        raise RuntimeError(f"ties with trim_scope global needs the prepass thresholds (tensor {name})")
    return torch.tensor(thresholds, dtype=base.dtype, device=base.device).view(-1, 1)


def ties_delta(
    base: Tensor,
    tensors: list[Tensor],
    weight: list[float],
    density: float,
    trim_scope: str = "tensor",
    context: dict[str, Any] | None = None,
    tensor_name: str | None = None,
) -> Tensor:
    """Steps 1–3 of TIES: the merged task vector before λ (shared with subspace boosting and AIM).

    Only the thresholds need the whole tensor; trimming, sign election and the disjoint mean are elementwise
    and run block by block (``common.blocks``), entry for entry the same as on whole tensors.
    """
    thresholds = trim_thresholds(base, tensors, density, trim_scope, context, tensor_name)
    out = torch.empty_like(base)
    flat_out, flat_base, flat = out.view(-1), base.reshape(-1), [t.reshape(-1) for t in tensors]
    for block in blocks(flat_out.numel(), base.device):
        b = flat_base[block]
        deltas = torch.stack([t[block] - b for t in flat])
        trimmed = torch.where(deltas.abs() >= thresholds, deltas, torch.zeros_like(deltas))
        flat_out[block] = disjoint_merge(trimmed, weight)
    return out


@merge_method(
    "ties",
    reference="Yadav et al. 2023, TIES-Merging, https://arxiv.org/abs/2306.01708",
    version=1,
    ranges={"density": {"low": 0.0, "low_open": True, "high": 1.0}},
    prepass=ties_prepass,
)
def ties(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.2,
    lambda_: float = 1.0,
    trim_scope: Literal["tensor", "global"] = "tensor",
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Trim each task vector to its top-``density`` entries, elect signs, average agreeing entries."""
    return base + lambda_ * ties_delta(base, tensors, weight, density, trim_scope, context, tensor_name)
