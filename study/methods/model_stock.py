"""Model Stock (Jang et al. 2024, arXiv 2403.19522), with mergekit's per-tensor semantics.

Per tensor, flattened: cᵢⱼ = ⟨τᵢ, τⱼ⟩ / max(‖τᵢ‖‖τⱼ‖, 1e-6) clamped to [−1, 1]; cosθ = mean over pairs;
t = T·cosθ / (1 + (T − 1)·cosθ); θ = t · mean(θᵢ) + (1 − t) · θ₀. The interpolation ratio needs at least two
task vectors, so the method is not applicable at k = 1. Where |1 + (T − 1)·cosθ| < 1e-6 there is no finite
ratio; we keep the base there (t = 0) rather than amplify opposing updates. mergekit 0.1.5 (the version this
project requires) does the same, with the same 1e-6 bound; mergekit 0.1.4 and earlier, the study fork among them,
have no guard and give inf/NaN there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from study.methods.common import blocks, mean_of
from study.methods.schema import merge_method


def stock_ratio(base: Tensor, tensors: list[Tensor]) -> float:
    """Model Stock's interpolation ratio t for one tensor."""
    return ratio_of_deltas([(t - base).flatten() for t in tensors])


def ratio_of_deltas(deltas: list[Tensor]) -> float:
    """t from the flat float32 task vectors; each norm is computed once (the pairs reuse it: same values)."""
    norms = [torch.linalg.vector_norm(d) for d in deltas]
    cosines = []
    for i, a in enumerate(deltas):
        for j in range(i + 1, len(deltas)):
            norm = (norms[i] * norms[j]).clamp(min=1e-6)
            cosines.append((torch.dot(a, deltas[j]) / norm).clamp(-1, 1))
    cos = torch.stack(cosines).mean()
    count = len(deltas)
    denominator = 1 + (count - 1) * cos
    if float(denominator.abs()) < 1e-6:
        return 0.0
    return float(count * cos / denominator)


@merge_method(
    "model_stock",
    reference="Jang et al. 2024, Model Stock, https://arxiv.org/abs/2403.19522",
    version=1,
    min_k=2,
    mergekit_note="Same as mergekit 0.1.5's model_stock (filter_wise: false), including where "
    "|1 + (T - 1)*cos(theta)| < 1e-6: both keep the base there (t = 0). mergekit 0.1.4 and earlier, the study "
    "fork among them, have no guard and give inf/NaN there. mergekit's filter_wise: true (a ratio per row) is not "
    "offered.",
)
def model_stock(base: Tensor, tensors: list[Tensor]) -> Tensor:
    """Interpolate between the base and the checkpoints' mean by a ratio set by the task vectors' angles."""
    t = stock_ratio(base, tensors)
    return t * mean_of(tensors) + (1 - t) * base


def model_stock_stored(out: Tensor, base: Tensor, tensors: list[Tensor]) -> bool:
    """The same merge from the stored-dtype CPU inputs into ``out`` (the driver's ``stored_kernel``), bit for bit:
    the ratio from the k float32 task vectors (no float32 copies of the checkpoints), then the interpolation
    block by block (``common.blocks``), each entry through the same operations as ``model_stock``. Peak memory
    is the k task vectors instead of k + 1 copies and k task vectors."""
    b = base.to(torch.float32)
    deltas = [t.to(torch.float32, copy=True).sub_(b).flatten() for t in tensors]
    t = ratio_of_deltas(deltas)
    del deltas
    flat_out, flat_b, flat = out.view(-1), b.reshape(-1), [x.reshape(-1) for x in tensors]
    for block in blocks(flat_out.numel(), "cpu"):
        mean = mean_of([x[block].to(torch.float32) for x in flat])
        flat_out[block] = t * mean + (1 - t) * flat_b[block]
    return True


model_stock.stored_kernel = model_stock_stored  # type: ignore[attr-defined]
