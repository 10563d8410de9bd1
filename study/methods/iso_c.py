"""Iso-C: isotropic merging in the common subspace (Marczak et al., ICML 2025, arXiv 2502.04959).

For a 2-D non-embedding tensor, M = Σ τᵢ = U S Vᵀ and merged = mean(S) · U Vᵀ: every direction of the summed
task vector gets the same singular value, so no task's dominant directions drown the others, while the nuclear
norm of M is kept. Every other tensor takes the mean of the task vectors. θ = θ₀ + alpha · merged. The tensor
scope (2-D, not ``embed_tokens``/``lm_head``) is the study fork's; the reference (``danielm1405/iso-merging``)
was written for CLIP.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.common import ALPHA_APPLIES_NOTE, ALPHA_RANGES, subspace_merge, svd, weighted_sum
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
    ranges=ALPHA_RANGES,
    mergekit_note="Not in mergekit 0.1.5. Reference: danielm1405/iso-merging d34010a (written for CLIP) with the "
    "study fork's LLM scope (kaganhitit11/mergekit, mergekit PR #639), matched to float32 precision; "
    + ALPHA_APPLIES_NOTE,
)
def iso_c(
    base: Tensor, tensors: list[Tensor], *, alpha: float = 1.0, alpha_applies: bool = True,
    tensor_name: str | None = None,
) -> Tensor:
    """Flatten the spectrum of the summed task vector, add alpha times the result."""
    return subspace_merge(base, tensors, tensor_name, alpha if alpha_applies else 1.0, iso_c_delta)
