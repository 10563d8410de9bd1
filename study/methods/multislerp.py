"""Multi-SLERP: a weighted barycentre of any number of checkpoints on the sphere (mergekit 0.1.5's ``multislerp``).

Per tensor, flattened: vᵢ = θᵢ − θ₀ with ``use_base`` (mergekit given a ``base_model``; θ₀ is added back at the
end) or θᵢ (mergekit without one); wᵢ the weights, divided by Σ wᵢ when ``normalize_weights``. Directions
uᵢ = vᵢ / (‖vᵢ‖ + eps); M = Σ wᵢ uᵢ and m = M/‖M‖; result = cos(eps) · m · Σ wᵢ‖vᵢ‖.

mergekit projects the uᵢ onto the tangent space at m, averages them there and maps the average back with the
exponential map, m cos‖t‖ + t sin‖t‖/‖t‖ with ‖t‖ = ‖Σ wᵢ (uᵢ − ⟨uᵢ, m⟩ m)‖ + eps. That weighted tangent sum is
zero in exact arithmetic (it is M − ⟨M, m⟩ m, and M is parallel to m), so only the eps survives: the closed form
above is mergekit's result to float32 rounding, without the k passes over the tensor that compute the zero.
With default eps (1e-8) cos(eps) is 1 in float32. So the result is the normalised weighted mean of the directions,
scaled by the weighted mean norm; at k = 2 with equal weights, the geodesic midpoint (``karcher``'s).

When ‖M‖ < eps (opposite directions whose weights cancel) there is no mean direction: at k = 2 the result is the
weighted sum Σ wᵢ vᵢ (plus θ₀), as mergekit; at k > 2 it is an error naming the tensor. A single checkpoint is
returned unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from study.errors import MethodError
from study.methods.common import USE_BASE_HELP, per_model, weighted_sum
from study.methods.schema import merge_method


def multislerp_vectors(vectors: list[Tensor], weight: list[float], eps: float, name: str | None) -> Tensor:
    """The barycentre of ``vectors`` (weights already final) as described in the module docstring."""
    norms = [float(torch.linalg.vector_norm(v)) for v in vectors]
    mean = torch.zeros_like(vectors[0])
    for v, w, n in zip(vectors, weight, norms):
        # Divide, scale, then add (not one fused add_(v, alpha)): opposite inputs then cancel exactly, as in
        # mergekit, instead of leaving an FMA residual that would pass for a mean direction.
        mean += (v / (n + eps)) * w
    length = float(torch.linalg.vector_norm(mean))
    if length < eps:
        if len(vectors) == 2:
            return weighted_sum(vectors, weight)
        raise MethodError(f"method 'multislerp', tensor {name}: the weighted directions of the {len(vectors)} "
                          f"inputs cancel (opposite tensors whose weights balance), so there is no mean direction; "
                          f"change the weights")
    scale = math.cos(eps) * sum(w * n for w, n in zip(weight, norms)) / length
    return mean.mul_(scale)


@merge_method(
    "multislerp",
    reference="Goddard, Multi-SLERP, https://goddard.blog/posts/multislerp-wow-what-a-cool-idea (mergekit's "
    "multislerp)",
    version=1,
    min_k=1,
    ranges={
        "weight": {"help": "per-model weight w_i of model i's direction and norm in the barycentre"},
        "normalize_weights": {"help": "divide the weights by their sum (then weights that sum to 0 are an error); "
                                      "false uses them as given, which also scales the result"},
        "eps": {"low": 0.0, "low_open": True,
                "help": "added to every norm before dividing by it; also the shortest mean direction accepted"},
        "use_base": {"help": USE_BASE_HELP},
    },
    mergekit_note="Same as mergekit's multislerp to float32 rounding (its tangent-space average is zero in exact "
    "arithmetic, so the closed form is computed). Task vectors exactly when use_base, which stands for mergekit's "
    "base_model. Weights summing to 0 with normalize_weights are an error here (mergekit divides by 0), and "
    "cancelling directions at k > 2 are an error naming the tensor (mergekit raises a ValueError).",
)
def multislerp(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    normalize_weights: bool = True,
    eps: float = 1e-8,
    use_base: bool = True,
    tensor_name: str | None = None,
) -> Tensor:
    """Weighted mean direction of the checkpoints (or their task vectors) on the sphere, times the mean norm."""
    if len(tensors) == 1:
        return tensors[0]
    weights = per_model(weight, len(tensors))
    if normalize_weights:
        total = sum(weights)
        if total == 0:
            raise MethodError(f"method 'multislerp': the weights {weights} sum to 0, so normalize_weights cannot "
                              f"divide by their sum (set normalize_weights: false or change them)")
        weights = [w / total for w in weights]
    vectors = [t - base for t in tensors] if use_base else list(tensors)
    out = multislerp_vectors(vectors, weights, eps, tensor_name).view(base.shape)
    return out.add_(base) if use_base else out
