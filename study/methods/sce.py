"""SCE: select, calculate, erase (Wan et al. 2024, FuseChat, arXiv 2408.07990; mergekit's ``sce``).

Select: per tensor, keep the entries whose variance across the T task vectors is highest (a ``select_topk``
fraction of the entries with non-zero variance). Calculate: weight model i by the mean of its squared
selected entries, normalised to sum 1. Erase: elect sign(Σ τᵢ) per entry and average only the entries of that
sign with those weights. θ = θ₀ + λ · merged. The pieces are ``task_vector_family.SCE`` (``sce_select``,
``sce_weights``, ``sce_erase_merge``).
"""

from __future__ import annotations

from torch import Tensor

from study.methods.schema import merge_method
from study.methods.task_vector_family import SCE, Dense, Recipe, merge


@merge_method(
    "sce",
    reference="Wan et al. 2024, FuseChat (SCE merging), https://arxiv.org/abs/2408.07990",
    version=1,
    ranges={
        "select_topk": {"low": 0.0, "low_open": True, "high": 1.0,
                        "help": "fraction of each tensor's entries with non-zero variance across the task vectors "
                                "kept, highest variance first: int(count * select_topk), equal variances lowest "
                                "index first; 1 (mergekit's default) keeps all"},
        "lambda": {"help": "scale of the merged task vector added to the base (not in mergekit's sce; 1 = theirs)"},
    },
    mergekit_note="Same as mergekit's sce, including the reference's rules that the weights fall back to 1/T when "
    "the summed mean squares are below 1e-6 (an absolute threshold: task vectors with an RMS below about "
    "1e-3/sqrt(T) get uniform weights) and that the divisor is at least 1e-6, except: among equal variances at "
    "the selection threshold ours keeps the lowest flat indices, mergekit's topk whichever its kernel returns; "
    "lambda is ours (mergekit has none; 1 is theirs). Like "
    "mergekit's, no per-model weight: SCE computes its own.",
)
def sce(
    base: Tensor,
    tensors: list[Tensor],
    *,
    select_topk: float = 1.0,
    lambda_: float = 1.0,
) -> Tensor:
    """Select high-variance entries, weight models by their energy, erase minority signs, average."""
    return merge(base, tensors, Recipe(Dense(), SCE(select_topk)), [1.0] * len(tensors), lambda_)
