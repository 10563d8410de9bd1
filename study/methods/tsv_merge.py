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

from study.methods.common import (
    ALPHA_APPLIES_HELP,
    is_2d_non_embedding,
    mean_of,
    orthogonalise,
    svd,
    task_vectors,
)
from study.methods.schema import merge_method


def tsv_delta(deltas: list[Tensor]) -> Tensor:
    """TSV-M's merged task vector for one matrix."""
    rows, cols = deltas[0].shape
    r = min(rows, cols)
    b = r // len(deltas)
    u = deltas[0].new_zeros(rows, r)
    s = deltas[0].new_zeros(r)
    vh = deltas[0].new_zeros(r, cols)
    for i, tv in enumerate(deltas):
        ui, si, vhi = svd(tv)
        u[:, i * b : (i + 1) * b] = ui[:, :b]
        s[i * b : (i + 1) * b] = si[:b]
        vh[i * b : (i + 1) * b, :] = vhi[:b, :]
    return (orthogonalise(u) * s) @ orthogonalise(vh)  # scaling columns = @ diag(s), exactly, without r² work


@merge_method(
    "tsv_merge",
    reference="Gargiulo et al. 2025, Task Singular Vectors: Reducing Task Interference in Model Merging, "
    "https://arxiv.org/abs/2412.00081",
    version=1,
    ranges={"alpha": {"help": "scale of the merged task vector added to the base (the study fork's lambda; "
                                "see alpha_applies)"},
            "alpha_applies": {"help": ALPHA_APPLIES_HELP}},
    mergekit_note="Not in mergekit 0.1.5. Reference: the authors' code (AntoAndGar/task_singular_vectors "
    "a6c9718) and the study fork (kaganhitit11/mergekit, mergekit PR #639), matched to float32 precision; "
    "alpha_applies: false is the fork before 903c139, where lambda had no effect.",
)
def tsv_merge(
    base: Tensor, tensors: list[Tensor], *, alpha: float = 1.0, alpha_applies: bool = True,
    tensor_name: str | None = None,
) -> Tensor:
    """Keep each task's top singular directions, decorrelate them, add alpha times the result."""
    deltas = task_vectors(base, tensors)
    alpha = alpha if alpha_applies else 1.0
    if is_2d_non_embedding(tensor_name, base):
        return base + alpha * tsv_delta(deltas).to(base.device)
    return base + alpha * mean_of(deltas)
