"""Task Singular Vectors merge, TSV-M (Gargiulo et al., CVPR 2025, arXiv 2412.00081).

For a 2-D non-embedding tensor each task vector contributes its top b = ⌊r/T⌋ singular triplets to block i of
stacked factors U (rows × r), S (r) and Vᵀ (r × cols); U and Vᵀ are then replaced by their nearest orthonormal
matrices (P Qᵀ from their own thin SVD), which removes the interference between tasks' subspaces, and
merged = U⊥ diag(S) Vᵀ⊥. Every other tensor takes the mean of the task vectors. θ = θ₀ + alpha · merged.
Per-model weights are ignored, as in the reference code (``AntoAndGar/task_singular_vectors``). Columns past
T·b stay zero, so they contribute nothing (the reference's layout).
"""

from __future__ import annotations

from torch import Tensor

from study.methods.common import ALPHA_APPLIES_NOTE, ALPHA_RANGES, orthogonalise, stack_top_triplets, subspace_merge
from study.methods.schema import merge_method


def tsv_delta(deltas: list[Tensor]) -> Tensor:
    """TSV-M's merged task vector for one matrix."""
    u, s, vh = stack_top_triplets(deltas, min(deltas[0].shape) // len(deltas), deltas[0])
    return (orthogonalise(u) * s) @ orthogonalise(vh)  # scaling columns = @ diag(s), exactly, without r² work


@merge_method(
    "tsv_merge",
    reference="Gargiulo et al. 2025, Task Singular Vectors: Reducing Task Interference in Model Merging, "
    "https://arxiv.org/abs/2412.00081",
    version=1,
    ranges=ALPHA_RANGES,
    mergekit_note="Not in mergekit 0.1.5. Reference: the authors' code (AntoAndGar/task_singular_vectors "
    "a6c9718) and the study fork (kaganhitit11/mergekit, mergekit PR #639), matched to float32 precision; "
    + ALPHA_APPLIES_NOTE,
)
def tsv_merge(
    base: Tensor, tensors: list[Tensor], *, alpha: float = 1.0, alpha_applies: bool = True,
    tensor_name: str | None = None,
) -> Tensor:
    """Keep each task's top singular directions, decorrelate them, add alpha times the result."""
    return subspace_merge(base, tensors, tensor_name, alpha if alpha_applies else 1.0, tsv_delta)
