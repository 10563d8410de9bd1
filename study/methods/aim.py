"""AIM: activation-informed merging (Nobari et al. 2025, arXiv 2502.02421).

A post-processing step on another method's merge. The base model is run on calibration text and, for every
``nn.Linear`` input, the mean absolute activation per input channel is recorded and normalised by the layer's
maximum to aⱼ ∈ [0, 1]. Channels the base relies on most are protected: column j of that layer's merged delta
Δ = θ_merged − θ₀ is scaled by (1 − aⱼ·(1 − ω)), so ω = 1 leaves the inner merge unchanged and ω = 0 keeps
the base's weights on its most active channel. Embeddings, ``lm_head`` (an output projection that is the
embedding when tied; methods.md groups it with embeddings) and every non-linear tensor keep the inner merge.

Calibration: ``calibration: zoo`` (default) draws 64 sequences of the mixture the zoo's base trained on (its
skill weights, its step-by-step share, the half of each table it saw) from a seeded generator;
``lm_eval:<task>[:split]`` takes a task's train or validation documents; any other value is the path of a
UTF-8 text file whose first 64 non-empty lines are the sequences. The activations are the statistics pass's
``act_abs_mean`` of the base (:mod:`study.statistics`): computed once per (base identity, calibration set),
cached on disk, shared by every cell of a sweep. The computation is version 2's operation for operation, so
merges are bit-identical to it (tests/test_regmean_fisher.py).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from study.errors import MethodError
from study.methods.calibrated import pass_statistics
from study.methods.common import task_vectors, weighted_sum
from study.methods.schema import merge_method
from study.methods.ties import TIES_RANGES, ties_delta, ties_prepass
from study.statistics.spec import StatisticRequest, parse_calibration

SEQUENCES = 64
MAX_TOKENS = 512


def aim_prepass(inputs: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The inner method's prepass (the global trim of ``ties``, when asked for)."""
    return ties_prepass(inputs, params) if params.get("inner_method") == "ties" else {}


def aim_statistics(params: dict[str, Any]) -> list[StatisticRequest]:
    """The base's mean absolute input activation per channel on the calibration text (``study.statistics``)."""
    calibration = parse_calibration(str(params.get("calibration", "zoo")), sequences=SEQUENCES,
                                    max_tokens=MAX_TOKENS, method="aim")
    return [StatisticRequest(statistic="act_abs_mean", of="base", calibration=calibration)]


def channel_scale(mean_abs: Tensor) -> Tensor:
    """aⱼ: the mean |input| per channel divided by the layer's largest (all zero when the layer saw none)."""
    peak = float(mean_abs.max())
    return mean_abs / peak if peak > 0 else mean_abs * 0


@merge_method(
    "aim",
    reference="Nobari et al. 2025, Activation-Informed Merging of Large Language Models, "
    "https://arxiv.org/abs/2502.02421",
    version=2,
    ranges={
        **TIES_RANGES,
        "omega": {"low": 0.0, "high": 1.0,
                  "help": "how much of the merged delta the base's most active input channel keeps: column j is "
                          "scaled by 1 - a_j*(1 - omega); 1 leaves the inner merge unchanged"},
        "inner_method": {"help": "the merge whose delta AIM post-processes (with lambda, weight and, for ties, "
                                 "density, trim_scope, normalize)"},
        "calibration": {"help": "text the base is run on: zoo (64 sequences of the mini zoo base's training "
                                "mixture), lm_eval:<task>[:train|:validation] (never the evaluated split) or a UTF-8 "
                                "text file's path (its first 64 non-empty lines; cached by content)"},
        "lambda": {"help": "the inner method's scale of the merged delta"},
        "weight": {"help": "per-model weight w_i of model i's task vector in the inner method"},
    },
    prepass=aim_prepass,
    statistics=aim_statistics,
    mergekit_note="Not in mergekit 0.1.5. Reference: Nobari et al. 2025 (arXiv 2502.02421), as methods.md "
    "specifies it. Its ties step is our ties (see that method's note).",
)
def aim(
    base: Tensor,
    tensors: list[Tensor],
    *,
    inner_method: Literal["ties", "task_arithmetic"] = "ties",
    omega: float = 0.4,
    calibration: str = "zoo",
    lambda_: float = 1.0,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.2,
    trim_scope: Literal["tensor", "global"] = "tensor",
    normalize: bool = True,
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Merge with the inner method, then shrink the delta on the base's most active input channels.

    ``lambda``, ``weight``, ``density``, ``trim_scope`` and ``normalize`` are the inner method's (the last three
    only for ``ties``).
    """
    if inner_method == "ties":
        delta = lambda_ * ties_delta(base, tensors, weight, density, trim_scope, context, tensor_name, normalize)
    else:
        delta = lambda_ * weighted_sum(task_vectors(base, tensors), weight)
    statistics = pass_statistics(context, "aim", "calibration activations", tensor_name)
    mean_abs = statistics.base("act_abs_mean", tensor_name or "")
    if mean_abs is None or base.dim() != 2:
        return base + delta
    if mean_abs.shape[0] != base.shape[1]:
        raise MethodError(
            f"aim: tensor {tensor_name} has {base.shape[1]} input channels but calibration saw {mean_abs.shape[0]}"
        )
    return base + delta * (1 - channel_scale(mean_abs).to(base.device) * (1 - omega))
