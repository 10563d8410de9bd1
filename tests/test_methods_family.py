"""The task-vector family's pieces (study.methods.task_vector_family): exact counts of every selection, DELLA's
keep probabilities and rescaling, SCE's selection, weights and erase, and each refactored method's recipe
reproducing its previous implementation bit for bit (the composition of the old helpers, kept as references)."""

from __future__ import annotations

import pytest
import torch

from study.errors import MethodError
from study.methods.common import (
    BLOCK_ELEMENTS,
    dare_rescale,
    disjoint_merge,
    keep_count,
    keep_top_magnitude,
    weighted_sum,
)
from study.methods.registry import get_method
from study.methods.task_vector_family import (
    SCE,
    Dense,
    MagPrune,
    OutlierBand,
    RandomDrop,
    Recipe,
    SignElection,
    Sum,
    TopMagnitude,
    magprune_probabilities,
    merge,
    merged_delta,
    outlier_band,
    sce_erase_merge,
    sce_select,
    sce_weights,
)

SHAPE = (3 * BLOCK_ELEMENTS // 512 + 7, 512)  # several blocks and a ragged last one
WEIGHT = [1.0, 0.5, 2.0]


def family(k: int = 3, shape=SHAPE, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.01 * torch.randn(shape, generator=g) for _ in range(k)]


def tied_bf16(shape=(64, 512), k: int = 2, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """bf16-like task vectors with a handful of distinct magnitudes (one to three ulps), so ties abound."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full(shape, 0.75)
    out = []
    for _ in range(k):
        steps = torch.randint(1, 4, shape, generator=g) * torch.where(torch.rand(shape, generator=g) < 0.5, -1, 1)
        out.append((base + steps * 2.0 ** -8).bfloat16().float())
    return base, out


# --- each recipe reproduces the previous implementation ---------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_recipe_is_trim_then_disjoint_merge(normalize):
    base, tensors = family()
    reference = disjoint_merge(torch.stack([keep_top_magnitude(t - base, 0.2) for t in tensors]), WEIGHT, normalize)
    got = merged_delta(base, tensors, Recipe(TopMagnitude(0.2), SignElection(normalize)), WEIGHT, "x")
    assert torch.equal(got, reference)


@pytest.mark.parametrize("density", [0.5, 1.0])
def test_dare_recipes_are_drop_rescale_then_sum_or_disjoint_mean(density):
    base, tensors = family()
    dropped = dare_rescale([t - base for t in tensors], density, 3, "x")
    linear = merge(base, tensors, Recipe(RandomDrop(density, 3), Sum()), WEIGHT, 0.8, "x")
    assert torch.equal(linear, base + 0.8 * weighted_sum(dropped, WEIGHT))
    ties = merge(base, tensors, Recipe(RandomDrop(density, 3), SignElection()), WEIGHT, 0.8, "x")
    assert torch.equal(ties, base + 0.8 * disjoint_merge(torch.stack(dropped), WEIGHT))


def test_breadcrumbs_recipe_is_band_then_sum():
    base, tensors = family()
    banded = [outlier_band(t - base, 0.5, 0.1) for t in tensors]
    got = merge(base, tensors, Recipe(OutlierBand(0.5, 0.1), Sum()), WEIGHT, 0.7)
    assert torch.equal(got, base + 0.7 * weighted_sum(banded, WEIGHT))


@pytest.mark.parametrize("name,recipe", [
    ("ties", Recipe(TopMagnitude(0.3), SignElection(True))),
    ("dare_linear", Recipe(RandomDrop(0.6, 1), Sum())),
    ("dare_ties", Recipe(RandomDrop(0.6, 1), SignElection(True))),
    ("breadcrumbs", Recipe(OutlierBand(0.6, 0.05), Sum())),
    ("breadcrumbs_ties", Recipe(OutlierBand(0.6, 0.05), SignElection(False))),
    ("della", Recipe(MagPrune(0.6, 0.1, 1, "probability"), SignElection(True))),
    ("della_linear", Recipe(MagPrune(0.6, 0.1, 1, "l1"), Sum())),
])
def test_registered_methods_are_their_recipes(name, recipe):
    base, tensors = family(shape=(96, 64))
    info = get_method(name)
    rescale = "l1" if name == "della_linear" else "probability"
    given = {"density": 0.6, "gamma": 0.05, "epsilon": 0.1, "seed": 1, "rescale": rescale}
    if name == "ties":
        given = {"density": 0.3}
    given = {k: v for k, v in given.items() if any(p.name == k for p in info.params)}
    kwargs = info.call_kwargs(info.resolve_params({**given, "weight": WEIGHT, "lambda": 0.9}, 3))
    if "tensor_name" in info.fn.__code__.co_varnames:
        kwargs["tensor_name"] = "x"
    assert torch.equal(info.fn(base, tensors, **kwargs), merge(base, tensors, recipe, WEIGHT, 0.9, "x"))


def test_density_one_members_reduce_to_task_arithmetic_and_untrimmed_ties():
    base, tensors = family(shape=(96, 64))
    full = [t - base for t in tensors]
    summed = merged_delta(base, tensors, Recipe(MagPrune(1.0, 0.1, 0), Sum()), WEIGHT)
    assert torch.equal(summed, weighted_sum(full, WEIGHT))
    untrimmed = disjoint_merge(torch.stack(full), WEIGHT)
    for sparsify in (MagPrune(1.0, 0.1, 0), OutlierBand(1.0, 0.01), TopMagnitude(1.0), Dense()):
        assert torch.equal(merged_delta(base, tensors, Recipe(sparsify, SignElection()), WEIGHT), untrimmed), sparsify


# --- exact counts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_magnitude_selections_keep_exact_counts_on_bf16_ties(density):
    base, tensors = tied_bf16()
    n = base.numel()
    trimmed = merged_delta(base, tensors[:1], Recipe(TopMagnitude(density), Sum()), [1.0])
    assert int((trimmed != 0).sum()) == keep_count(density, n)
    banded = merged_delta(base, tensors[:1], Recipe(OutlierBand(density, 0.05), Sum()), [1.0])
    assert int((banded != 0).sum()) == int(density * n)


def test_sce_selects_exactly_its_count_of_highest_variance_entries():
    base, tensors = tied_bf16(k=3)  # few distinct variances: ties at the threshold
    deltas = torch.stack([(t - base).flatten() for t in tensors])
    var = torch.var(deltas, dim=0, unbiased=False)
    for fraction in (0.1, 0.5, 0.9):
        mask = sce_select(deltas, fraction)
        keep = int(torch.count_nonzero(var) * fraction)
        assert int(mask.sum()) == keep
        reference = torch.zeros_like(mask)
        reference[torch.sort(var, descending=True, stable=True).indices[:keep]] = True  # lowest index first
        assert torch.equal(mask, reference)
        assert bool((var[mask] > 0).all())
    assert not sce_select(deltas[:1], 0.5).any()  # one model: no variance, nothing selected (as mergekit)


# --- DELLA's MagPrune -------------------------------------------------------------------------------------


def test_magprune_probabilities_rise_with_magnitude_rank_per_row():
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(40, 300, generator=g)
    p = magprune_probabilities(delta, 0.6, 0.2)
    assert p.shape == delta.shape and p.dtype == torch.float32
    assert float(p.min()) >= 0.4 - 1e-7 and float(p.max()) <= 0.8 + 1e-7
    ordered = torch.gather(p, 1, delta.abs().argsort(dim=1))
    assert bool((ordered[:, 1:] > ordered[:, :-1]).all())  # strictly increasing in magnitude within each row
    torch.testing.assert_close(ordered[:, 0], torch.full((40,), 0.4))
    torch.testing.assert_close(ordered[:, -1], torch.full((40,), 0.8))
    torch.testing.assert_close(ordered, torch.linspace(0.4, 0.8, 300).expand(40, -1))  # linear in rank
    assert magprune_probabilities(delta[0], 0.6, 0.2).shape == (1, 300)  # a 1-D tensor is one row
    torch.testing.assert_close(magprune_probabilities(torch.tensor([[3.0], [-1.0]]), 0.6, 0.2), torch.full((2, 1), 0.6))


def test_magprune_ranks_equal_magnitudes_by_position():
    p = magprune_probabilities(torch.tensor([[1.0, -1.0, 0.5, 1.0, 2.0]]), 0.5, 0.2)
    torch.testing.assert_close(p, torch.tensor([[0.4, 0.5, 0.3, 0.6, 0.7]]))


def test_magprune_keeps_with_its_probabilities_and_rescales_by_one_over_p():
    g = torch.Generator().manual_seed(2)
    delta = torch.randn(200, 1000, generator=g)
    p = magprune_probabilities(delta, 0.5, 0.3)
    thinned = MagPrune(0.5, 0.3, 7).thin(delta, "x")
    kept = thinned != 0
    torch.testing.assert_close(thinned[kept], (delta / p)[kept])  # each survivor divided by its own p
    ranks = delta.abs().argsort(dim=1).argsort(dim=1)  # 0..999 per row
    for decile in range(10):  # 20 000 entries each: the keep rate within ~4 sd of the mean p
        inside = (ranks >= 100 * decile) & (ranks < 100 * (decile + 1))
        rate, target = float(kept[inside].float().mean()), float(p[inside].mean())
        assert abs(rate - target) < 4 * (target * (1 - target) / int(inside.sum())) ** 0.5, (decile, rate, target)


def test_magprune_rescales_by_l1_or_not_at_all():
    g = torch.Generator().manual_seed(3)
    delta = torch.randn(50, 80, generator=g)
    l1 = MagPrune(0.5, 0.2, 7, "l1").thin(delta, "x")
    none = MagPrune(0.5, 0.2, 7, "none").thin(delta, "x")
    assert torch.equal(l1 != 0, none != 0)  # the same mask
    kept = none != 0
    assert torch.equal(none[kept], delta[kept])
    torch.testing.assert_close(l1.abs().sum(), delta.abs().sum())


def test_magprune_is_unbiased_with_probability_rescale():
    g = torch.Generator().manual_seed(4)
    delta = torch.randn(8, 64, generator=g)
    mean = torch.stack([MagPrune(0.5, 0.3, s).thin(delta, "x") for s in range(4000)]).mean(0)
    assert float((mean - delta).abs().max()) < 0.15 * float(delta.abs().max())


def test_magprune_masks_follow_seed_name_and_content_not_position():
    base, tensors = family(shape=(64, 64))
    a = MagPrune(0.5, 0.2, 1)
    one = a.thin(tensors[0] - base, "x")
    assert torch.equal(a.thin(tensors[0] - base, "x"), one)
    assert not torch.equal(MagPrune(0.5, 0.2, 2).thin(tensors[0] - base, "x"), one)
    assert not torch.equal(a.thin(tensors[0] - base, "y"), one)
    recipe = Recipe(a, SignElection())
    forward = merged_delta(base, tensors, recipe, WEIGHT, "x")
    backward = merged_delta(base, tensors[::-1], recipe, WEIGHT[::-1], "x")
    torch.testing.assert_close(forward, backward, rtol=0, atol=1e-7)


@pytest.mark.parametrize("density,epsilon", [(0.1, 0.15), (0.9, 0.1), (0.3, 0.3)])
def test_magprune_rejects_probabilities_outside_zero_one(density, epsilon):
    with pytest.raises(MethodError, match="epsilon"):
        MagPrune(density, epsilon, 0)
    info = get_method("della")
    with pytest.raises(MethodError):
        base, tensors = family(shape=(4, 4))
        info.fn(base, tensors, **info.call_kwargs(info.resolve_params({"density": density, "epsilon": epsilon}, 3)))


# --- SCE --------------------------------------------------------------------------------------------------


def test_sce_weights_are_normalised_energies_with_the_uniform_fallback():
    deltas = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 3.0, 0.0]])
    energy = torch.tensor([6.0, 1.0, 9.0]) / 4
    torch.testing.assert_close(sce_weights(deltas), energy / energy.sum())
    torch.testing.assert_close(sce_weights(deltas * 1e-4), torch.full((3,), 1 / 3))  # Σ mean squares < 1e-6


def test_sce_erases_minority_signs_and_averages_with_its_weights():
    deltas = torch.tensor([[1.0, -2.0, 0.0, 1.0], [3.0, 1.0, 0.0, -4.0]])
    w = torch.tensor([0.25, 0.75])
    got = sce_erase_merge(deltas, w)
    # entry 0: both +; entry 1: sum -1 elects -, only model 0; entry 2: nobody (0); entry 3: sum -3, only model 1
    expected = torch.tensor([(0.25 * 1 + 0.75 * 3) / 1.0, -2.0, 0.0, -4.0])
    torch.testing.assert_close(got, expected)


def test_sce_consensus_selects_then_weights_the_selected_entries():
    base, tensors = family(shape=(32, 48))
    deltas = torch.stack([(t - base).flatten() for t in tensors])
    selected = deltas * sce_select(deltas, 0.3).to(deltas.dtype)
    reference = sce_erase_merge(selected, sce_weights(selected))
    got = merged_delta(base, tensors, Recipe(Dense(), SCE(0.3)), [1.0] * 3)
    assert torch.equal(got.flatten(), reference)
    assert int((got != 0).sum()) <= int(0.3 * got.numel())
