"""Model Soup / weighted average: θ = Σ wᵢ θᵢ / Σ wᵢ (Wortsman et al. 2022). No base needed."""

from __future__ import annotations

from torch import Tensor

from study.errors import MethodError
from study.methods.common import per_model, weighted_sum
from study.methods.schema import merge_method


@merge_method(
    "linear",
    reference="Wortsman et al. 2022, Model soups, https://arxiv.org/abs/2203.05482",
    version=1,
    needs_base=False,
    elementwise=True,
    ranges={"weight": {"help": "per-model weight w_i in sum(w_i*theta_i) / sum(w_i): only the ratios matter; "
                               "weights that sum to 0 are an error"}},
    mergekit_note="Same as mergekit's linear with normalize: true (its default). mergekit's normalize: false "
    "(the undivided sum) is not offered, and weights summing to 0 are an error here where mergekit divides by 0.",
)
def linear(base: Tensor | None, tensors: list[Tensor], *, weight: list[float] = 1.0) -> Tensor:  # type: ignore[assignment]
    """Weighted average of the checkpoints' weights."""
    weight = per_model(weight, len(tensors))
    if sum(weight) == 0:
        raise MethodError(f"method 'linear': the weights {weight} sum to 0, so their average is undefined")
    return weighted_sum(tensors, weight) / sum(weight)
