"""The task-vector family as one pipeline: sparsify each τᵢ, then combine the thinned τ̃ᵢ by a consensus rule.

ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della, della_linear and sce differ only in two
choices, so each is a :class:`Recipe` here and a small registered method elsewhere:

* **sparsify** (per model, per tensor): :class:`Dense` (keep all), :class:`TopMagnitude` (exactly
  max(1, ⌊density·n⌋) largest |τ|, per tensor or global), :class:`RandomDrop` (DARE: keep with probability
  density, divide by density), :class:`OutlierBand` (breadcrumbs: drop the top γ, keep the next density),
  :class:`MagPrune` (DELLA: keep probability rising with the magnitude rank from density − ε to density + ε,
  survivors rescaled by 1/p, by the L1 norm, or not at all);
* **consensus** (across models, per entry): :class:`Sum` (Σ wᵢ τ̃ᵢ), :class:`SignElection` (TIES: elect
  sign(Σ wᵢ τ̃ᵢ), keep the agreeing entries, optionally divide by their weights), :class:`SCE` (select the
  entries of highest variance across models, weight each model by its energy, erase minority signs).

θ = θ₀ + λ · combine(sparsify(τ₁), …, sparsify(τ_T)). Why one pipeline: a fix to a shared step (the exact
top-k, the disjoint mean) reaches every method that uses it, and a new combination is a new recipe, not a new
copy of the arithmetic. When the consensus is elementwise the combination runs block by block
(``common.blocks``), as TIES always has: a sparsifier prepares each model's whole-tensor statistic once (a
top-k cut, a mask) and then hands out blocks, so the whole-tensor float32 temporaries are one model's at a time
for the magnitude trim and the result is entry for entry the same as combining whole tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor

from study.errors import MethodError
from study.methods.common import (
    TopK,
    ascending_rank_window,
    blocks,
    dare_mask,
    disjoint_merge,
    keep_count,
    stable_seed,
    top_k_cut,
    top_k_mask,
    weighted_sum,
)

Rows = Callable[[Tensor, slice], Tensor]
"""A prepared sparsifier for one model and tensor: ``rows(delta_block, block)`` gives the thinned entries of
that block of τᵢ (``delta_block`` is τᵢ's flat entries at ``block``; blocks come in order)."""

GLOBAL_CUTS = "ties_cuts"
GLOBAL_QUOTAS = "ties_quotas"
"""Context keys of a global magnitude trim (``ties.ties_prepass``): per model the ``TopK`` over its whole task
vector, and per tensor how many of the entries equal to the threshold this tensor keeps."""


def _all(delta_block: Tensor, block: slice) -> Tensor:
    return delta_block


def _slices(kept: Tensor) -> Rows:
    flat = kept.reshape(-1)
    return lambda delta_block, block: flat[block]


# --- sparsify ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dense:
    """Keep every entry (task arithmetic's and SCE's first step)."""

    def prepare(self, base: Tensor, tensor: Tensor, index: int, name: str | None, context: Any) -> Rows:
        return _all


@dataclass(frozen=True)
class TopMagnitude:
    """TIES' trim: exactly ``max(1, ⌊density·n⌋)`` entries of largest |τᵢ|, equal magnitudes at the threshold
    kept lowest flat index first (``common.TopK``). ``scope: tensor`` ranks within this tensor; ``global`` over
    model i's whole task vector, from the thresholds a prepass put in the context (``ties.ties_prepass``)."""

    density: float
    scope: Literal["tensor", "global"] = "tensor"

    def cut(self, base: Tensor, tensor: Tensor, index: int, name: str | None, context: Any) -> TopK:
        if self.scope == "tensor":
            return top_k_cut((tensor - base).abs().flatten(), keep_count(self.density, base.numel()))
        cuts = (context or {}).get(GLOBAL_CUTS)
        if cuts is None:
            raise RuntimeError(f"a global magnitude trim needs the prepass thresholds (tensor {name})")
        quota = (context or {}).get(GLOBAL_QUOTAS, {}).get(name or "", [None] * len(cuts))[index]
        return TopK(cuts[index].value, quota)

    def prepare(self, base: Tensor, tensor: Tensor, index: int, name: str | None, context: Any) -> Rows:
        cut = self.cut(base, tensor, index, name, context)
        seen = 0  # entries equal to the threshold met in earlier blocks (``common.top_k_mask``)

        def rows(delta_block: Tensor, block: slice) -> Tensor:
            nonlocal seen
            mask, seen = top_k_mask(delta_block.abs(), cut, seen)
            return torch.where(mask, delta_block, torch.zeros_like(delta_block))

        return rows


@dataclass(frozen=True)
class RandomDrop:
    """DARE: keep each entry with probability ``density`` (``common.dare_mask``, seeded by (seed, model index,
    tensor name)) and divide the survivors by ``density``, the paper's rescale; density 1 keeps τᵢ as it is."""

    density: float
    seed: int

    def prepare(self, base: Tensor, tensor: Tensor, index: int, name: str | None, context: Any) -> Rows:
        if self.density >= 1.0:
            return _all
        delta = tensor - base
        mask = dare_mask(delta.shape, self.density, self.seed, index, name).to(delta.device)
        return _slices(delta * mask / self.density)


def outlier_band(delta: Tensor, density: float, gamma: float) -> Tensor:
    """Breadcrumbs' band: zero the top-``gamma`` outliers and everything below the next ``density`` fraction.

    Counts as mergekit's ``magnitude_outliers``: keep ⌊density·n⌋, drop ⌊gamma·n⌋ above them (fewer when both
    do not fit); equal magnitudes ranked by position (``common.ascending_rank_window``).
    """
    n = delta.numel()
    keep = int(density * n)
    drop_top = min(int(gamma * n), n - keep)
    drop_bottom = n - keep - drop_top
    if drop_top == 0 and drop_bottom == 0:
        return delta
    mask = ascending_rank_window(delta.abs().flatten(), drop_bottom, drop_bottom + keep)
    return delta * mask.view_as(delta).to(delta.dtype)


@dataclass(frozen=True)
class OutlierBand:
    """Model Breadcrumbs: per tensor, drop the top ``gamma`` fraction of |τᵢ| and keep the next ``density``
    fraction (``outlier_band``); no rescale."""

    density: float
    gamma: float

    def prepare(self, base: Tensor, tensor: Tensor, index: int, name: str | None, context: Any) -> Rows:
        return _slices(outlier_band(tensor - base, self.density, self.gamma))


MagPruneRescale = Literal["probability", "l1", "none"]


def magprune_probabilities(delta: Tensor, density: float, epsilon: float) -> Tensor:
    """DELLA's keep probabilities: per row (dimension 1; a 1-D tensor is one row), the entry of magnitude rank
    r (1 = smallest of the row's m) is kept with p = (density − ε) + (r − 1)/(m − 1) · 2ε.

    The ranking is per row, as in the DELLA authors' code (``declare-lab/della``, ``rank_magnitude``) and
    mergekit's ``della_magprune``; the arithmetic is theirs operation for operation, so the probabilities are
    bit for bit mergekit's when no two magnitudes of a row are equal. Equal magnitudes are ranked by position
    (a stable sort; mergekit's argsort is not stable). A row of one entry, where theirs divide 0 by 0 (mergekit
    raises), gets p = density. Returns float32 in the shape of the 2-D view (``(1, n)`` for a 1-D tensor).
    """
    rows = delta.abs() if delta.dim() >= 2 else delta.abs().reshape(1, -1)
    order = torch.argsort(rows, dim=1, stable=True)
    m = rows.shape[1]
    ranks = torch.empty(rows.shape, dtype=torch.float32, device=rows.device)
    shape = [1] * rows.dim()
    shape[1] = m
    positions = torch.arange(m, device=rows.device).to(torch.float32).view(shape).expand_as(order) + 1
    ranks.scatter_(1, order, positions)
    if m == 1:
        rank_norm = torch.full_like(ranks, 0.5)
    else:
        low, high = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
        rank_norm = ((ranks - low) / (high - low)).clamp(0, 1)
    return (density - epsilon) + rank_norm * 2 * epsilon


def fingerprint(delta: Tensor) -> int:
    """An exact, order-free digest of τᵢ: the sum of its float32 bit patterns (the same on any device)."""
    return int(delta.contiguous().view(torch.int32).sum(dtype=torch.int64))


def draw_keep(probs: Tensor, seed: int) -> Tensor:
    """A 0/1 float mask with P(keep) = probs, from a CPU generator (the same masks on the CPU and a GPU)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return (torch.rand(tuple(probs.shape), generator=gen) < probs.cpu()).to(probs.device, torch.float32)


def l1_rescaled(delta: Tensor, masked: Tensor, eps: float = 1e-7) -> Tensor:
    """mergekit's ``rescale: true``: scale the kept entries so the tensor keeps τᵢ's L1 norm (unchanged when
    either norm is below ``eps``, as mergekit's ``rescaled_masked_tensor``)."""
    before, after = delta.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


@dataclass(frozen=True)
class MagPrune:
    """DELLA's MagPrune: keep entry j of τᵢ with the probability ``magprune_probabilities`` gives it (higher for
    larger magnitudes, density ± ε), then rescale the survivors: ``probability`` divides each by its own p
    (the DELLA paper and authors' code: unbiased), ``l1`` restores τᵢ's L1 norm (mergekit's ``rescale: true``),
    ``none`` keeps them as they are (mergekit's ``rescale: false``). Density 1 keeps τᵢ as it is.

    The mask is drawn from a generator seeded by (seed, tensor name, ``fingerprint(τᵢ)``): by the model's own
    task vector, not its position, so listing the checkpoints in another order gives the same merge (DARE's
    masks are seeded by position), and a model keeps the same masks in every subset it is merged in.
    """

    density: float
    epsilon: float
    seed: int
    rescale: MagPruneRescale = "probability"

    def __post_init__(self) -> None:
        if self.density < 1.0 and not (0.0 < self.density - self.epsilon and self.density + self.epsilon < 1.0):
            raise MethodError(
                f"density {self.density} and epsilon {self.epsilon}: DELLA's keep probabilities density +/- epsilon "
                f"must lie in (0, 1); lower epsilon or move density"
            )

    def thin(self, delta: Tensor, name: str | None) -> Tensor:
        """τᵢ thinned and rescaled (the whole tensor)."""
        if self.density >= 1.0:
            return delta
        probs = magprune_probabilities(delta, self.density, self.epsilon)
        mask = draw_keep(probs, stable_seed("della", self.seed, name, fingerprint(delta)))
        rows = delta.reshape(probs.shape)
        masked = rows * mask
        if self.rescale == "probability":
            kept = masked / probs
        elif self.rescale == "l1":
            kept = l1_rescaled(rows, masked)
        else:
            kept = masked
        return kept.reshape(delta.shape)

    def prepare(self, base: Tensor, tensor: Tensor, index: int, name: str | None, context: Any) -> Rows:
        if self.density >= 1.0:
            return _all
        return _slices(self.thin(tensor - base, name))


Sparsifier = Union[Dense, TopMagnitude, RandomDrop, OutlierBand, MagPrune]


# --- consensus --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sum:
    """No consensus: Σ wᵢ τ̃ᵢ (task arithmetic on the thinned task vectors)."""

    elementwise = True

    def combine(self, rows: list[Tensor], weight: list[float]) -> Tensor:
        return weighted_sum(rows, weight)


@dataclass(frozen=True)
class SignElection:
    """TIES steps 2–3 (``common.disjoint_merge``): elect γ = sign(Σ wᵢ τ̃ᵢ) per entry (0 elects +), keep the
    models whose τ̃ᵢ is non-zero with sign γ, and with ``normalize`` divide their weighted sum by their weights."""

    normalize: bool = True
    elementwise = True

    def combine(self, rows: list[Tensor], weight: list[float]) -> Tensor:
        return disjoint_merge(torch.stack(rows), weight, self.normalize)


def sce_select(deltas: Tensor, fraction: float) -> Tensor:
    """SCE's selection on a ``(T, n)`` stack: the entries of highest variance across the models (population
    variance), ``int(count_nonzero(var) · fraction)`` of them, exactly (equal variances lowest index first).
    The count is mergekit's expression, a float32 product, so it rounds as theirs does. Returns a bool mask."""
    if fraction >= 1.0:
        return torch.ones(deltas.shape[1:], dtype=torch.bool, device=deltas.device)
    var = torch.var(deltas, dim=0, unbiased=False)
    keep = int(torch.count_nonzero(var) * fraction)
    if keep == 0:
        return torch.zeros_like(var, dtype=torch.bool)
    mask, _ = top_k_mask(var, top_k_cut(var, keep))
    return mask


def sce_weights(deltas: Tensor) -> Tensor:
    """SCE's calculation: model i's weight is the mean of its squared (selected) entries over their sum, or
    1/T each when that sum is below 1e-6 (the reference's absolute threshold, not relative: task vectors whose
    RMS is below about 1e-3/√T fall under it and get uniform weights; on the mini zoo's fine-tunes no tensor
    does, on the tests' tiny random family 16 of 21 tensors do)."""
    energy = deltas.square().reshape(deltas.shape[0], -1).mean(dim=1)
    total = float(energy.sum())
    if abs(total) < 1e-6:
        return torch.ones_like(energy) / energy.shape[0]
    return energy / total


def sce_erase_merge(deltas: Tensor, weights: Tensor) -> Tensor:
    """SCE's erase: elect sign(Σ τᵢ) per entry (unweighted; 0 elects +), drop the entries of the other sign (and
    zeros), and average the rest with the models' weights: Σ wᵢ τᵢ [agree] / max(Σ wᵢ [agree], 1e-6)."""
    elected = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agree = (torch.sign(deltas) == elected).to(deltas.dtype)
    w = weights.view(-1, *([1] * (deltas.dim() - 1))) * agree
    return (deltas * w).sum(dim=0) / w.sum(dim=0).clamp(min=1e-6)


@dataclass(frozen=True)
class SCE:
    """SCE (select, calculate, erase; FuseChat, arXiv 2408.07990): ``sce_select`` with ``select`` (1 keeps
    all), then ``sce_weights`` and ``sce_erase_merge`` on the selected task vectors. Per-model weights are not
    used (SCE computes its own); whole tensors, since the selection and the weights rank and sum over them."""

    select: float = 1.0
    elementwise = False

    def combine(self, rows: list[Tensor], weight: list[float]) -> Tensor:
        deltas = torch.stack(rows)
        if self.select < 1.0:
            deltas = deltas * sce_select(deltas, self.select).to(deltas.dtype)
        return sce_erase_merge(deltas, sce_weights(deltas))


Consensus = Union[Sum, SignElection, SCE]


# --- the pipeline -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One member of the family: how each task vector is thinned and how the thinned ones are combined."""

    sparsify: Sparsifier
    consensus: Consensus


def thinned_blocks(
    base: Tensor, tensors: list[Tensor], sparsify: Sparsifier, name: str | None = None, context: Any = None,
    whole: bool = False,
) -> Iterator[tuple[slice, list[Tensor]]]:
    """Each block's thinned task vectors, one flat row per model (``whole``: one block, the whole tensor)."""
    rows = [sparsify.prepare(base, t, i, name, context) for i, t in enumerate(tensors)]
    flat_base, flat = base.reshape(-1), [t.reshape(-1) for t in tensors]
    n = flat_base.numel()
    for block in [slice(0, n)] if whole else blocks(n, base.device):
        b = flat_base[block]
        yield block, [r(t[block] - b, block) for r, t in zip(rows, flat)]


def merged_delta(
    base: Tensor, tensors: list[Tensor], recipe: Recipe, weight: list[float], name: str | None = None,
    context: Any = None,
) -> Tensor:
    """The combined task vector before λ, in ``base``'s shape."""
    out = torch.empty_like(base)
    flat_out = out.view(-1)
    whole = not recipe.consensus.elementwise
    for block, rows in thinned_blocks(base, tensors, recipe.sparsify, name, context, whole):
        flat_out[block] = recipe.consensus.combine(rows, weight)
    return out


def merge(
    base: Tensor, tensors: list[Tensor], recipe: Recipe, weight: list[float], lambda_: float,
    name: str | None = None, context: Any = None,
) -> Tensor:
    """θ₀ + λ · the recipe's combined task vector."""
    return base + lambda_ * merged_delta(base, tensors, recipe, weight, name, context)


MAGPRUNE_RESCALE_HELP = (
    "how the kept entries are rescaled: probability = divide each by its keep probability (the DELLA paper and "
    "authors' code, unbiased); l1 = restore the tensor's L1 norm (mergekit's rescale: true, its default); "
    "none = no rescale (mergekit's rescale: false)"
)
MAGPRUNE_RANGES: dict[str, dict[str, Any]] = {
    "density": {"low": 0.0, "low_open": True, "high": 1.0,
                "help": "mean keep probability of a task-vector entry (1 - drop rate); 1 keeps all; "
                        "density +/- epsilon must lie in (0, 1)"},
    "epsilon": {"low": 0.0, "high": 0.5, "high_open": True,
                "help": "half-width of the keep probabilities: per row, the smallest magnitude is kept with "
                        "density - epsilon, the largest with density + epsilon, linearly in rank between"},
    "seed": {"low": 0, "help": "seeds the keep masks, drawn per (seed, tensor name, the model's own task vector): "
                               "the same masks in any process, on any device and in any checkpoint order"},
    "rescale": {"help": MAGPRUNE_RESCALE_HELP},
}

MERGED_LAMBDA: dict[str, Any] = {"help": "scale of the merged task vector added to the base"}
"""λ of a member whose consensus is a merge (``SignElection``): θ₀ + λ · merged."""
SUMMED_LAMBDA: dict[str, Any] = {"help": "scale of the summed task vectors added to the base"}
"""λ of a member whose consensus is ``Sum``: θ₀ + λ Σ wᵢ τ̃ᵢ."""


def sum_weight(thinned: str) -> dict[str, Any]:
    """The per-model weight of a member whose consensus is ``Sum``; ``thinned`` names what its sparsifier made
    of τᵢ (one definition, so the members' help texts differ only there)."""
    return {"help": f"per-model weight w_i of model i's {thinned} task vector in the sum"}


def election_weight(thinned: str) -> dict[str, Any]:
    """The per-model weight of a member whose consensus is ``SignElection``, as ``sum_weight``."""
    return {"help": f"per-model weight w_i: scales model i's {thinned} task vector in the sign election, the "
                    f"agreeing sum and the divisor"}
