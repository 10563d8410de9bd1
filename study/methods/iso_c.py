"""Iso-C: isotropic merging in the common subspace (Marczak et al., ICML 2025, arXiv 2502.04959).

For a 2-D non-embedding tensor, M = Σ τᵢ = U S Vᵀ and merged = mean(S) · U Vᵀ: every direction of the summed
task vector gets the same singular value, so no task's dominant directions drown the others, while the nuclear
norm of M is kept. Every other tensor takes the mean of the task vectors. θ = θ₀ + alpha · merged. The tensor
scope (2-D, not ``embed_tokens``/``lm_head``) is the study fork's; the reference (``danielm1405/iso-merging``)
was written for CLIP.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.common import ALPHA_APPLIES_HELP, is_2d_non_embedding, mean_of, svd, task_vectors, weighted_sum
from study.methods.schema import merge_method


def iso_c_delta(deltas: list[Tensor]) -> Tensor:
    """Iso-C's merged task vector for one matrix: the sum's singular values flattened to their mean."""
    u, s, vh = svd(weighted_sum(deltas, [1.0] * len(deltas)))
    return s.mean() * (u @ vh)


@merge_method(
    "iso_c",
    reference="Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, https://arxiv.org/abs/2502.04959",
    version=1,
    ranges={"alpha": {"help": "scale of the merged task vector added to the base (the study fork's lambda; "
                                "see alpha_applies)"},
            "alpha_applies": {"help": ALPHA_APPLIES_HELP}},
    mergekit_note="Not in mergekit 0.1.5. Reference: danielm1405/iso-merging d34010a (written for CLIP) with the "
    "study fork's LLM scope (kaganhitit11/mergekit, mergekit PR #639), matched to float32 precision; "
    "alpha_applies: false is the fork before 903c139, where lambda had no effect.",
)
def iso_c(
    base: Tensor, tensors: list[Tensor], *, alpha: float = 1.0, alpha_applies: bool = True,
    tensor_name: str | None = None,
) -> Tensor:
    """Flatten the spectrum of the summed task vector, add alpha times the result."""
    deltas = task_vectors(base, tensors)
    alpha = alpha if alpha_applies else 1.0
    if is_2d_non_embedding(tensor_name, base):
        return base + alpha * iso_c_delta(deltas).to(base.device)
    return base + alpha * mean_of(deltas)
