"""Exact top-k: every selection by magnitude keeps exactly the count the method specifies, also when many
magnitudes are equal at the threshold (bf16 task vectors), with ties kept lowest index first; per tensor and
global; equal to mergekit's ``magnitude`` sparsification when mergekit's sort is made stable. Also the study
fork's variants (TIES ``normalize``, Subspace Boosting's ``boost_order``, ``alpha_applies``)."""

from __future__ import annotations

import pytest
import torch

from study.merge import merge_state_dict, open_inputs
from study.methods.common import BLOCK_ELEMENTS, ascending_rank_window, keep_top_magnitude, top_k_cut, top_k_mask
from study.methods.registry import get_method
from study.methods.ties import ties_delta

SHAPE = (3 * BLOCK_ELEMENTS // 512 + 7, 512)  # several blocks and a ragged last one


def tied_bf16(shape=SHAPE, seed=0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A bf16 base and two bf16 checkpoints whose task vectors take a handful of distinct non-zero magnitudes,
    as fine-tunes stored in bf16 do: most entries move by one or two ulps."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full(shape, 0.75)
    ulp = 2.0 ** -8  # bf16's spacing in [0.5, 1)
    tensors = []
    for _ in range(2):
        steps = torch.randint(1, 4, shape, generator=g) * torch.where(torch.rand(shape, generator=g) < 0.5, -1, 1)
        tensors.append((base + steps * ulp).bfloat16().float())
    return base, tensors


def stable_top_k(delta: torch.Tensor, keep: int) -> torch.Tensor:
    """The reference: the first ``keep`` positions of a stable descending sort of |delta|."""
    mask = torch.zeros(delta.numel(), dtype=torch.bool)
    mask[torch.sort(delta.abs().flatten(), descending=True, stable=True).indices[:keep]] = True
    return mask.view_as(delta)


@pytest.mark.parametrize("density", [0.2, 0.5, 0.9])
def test_tensor_scope_keeps_exactly_floor_density_n_on_bf16_ties(density):
    base, tensors = tied_bf16()
    n = base.numel()
    keep = int(density * n)
    delta = tensors[0] - base
    assert int((delta.abs() >= (delta.abs().flatten().sort(descending=True).values[keep - 1])).sum()) > keep  # ties
    trimmed = ties_delta(base, tensors[:1], [1.0], density)  # one model: the disjoint mean is its trimmed τ
    assert int((trimmed != 0).sum()) == keep
    assert torch.equal(trimmed != 0, stable_top_k(delta, keep))
    assert torch.equal(keep_top_magnitude(delta, density) != 0, stable_top_k(delta, keep))
    assert torch.equal(ties_delta(base, tensors[:1], [1.0], density), trimmed)  # deterministic


def test_block_wise_trim_equals_whole_tensor_on_ties():
    base, tensors = tied_bf16()
    weight = [1.0, 0.5]
    from study.methods.common import disjoint_merge

    reference = disjoint_merge(torch.stack([keep_top_magnitude(t - base, 0.3) for t in tensors]), weight)
    assert torch.equal(ties_delta(base, tensors, weight, 0.3), reference)


@pytest.mark.parametrize("case", ["few_values", "zeros", "constant", "distinct"])
def test_top_k_mask_equals_stable_sort_in_any_blocking(case):
    g = torch.Generator().manual_seed(3)
    n = 70_001
    mag = {
        "few_values": torch.randint(1, 5, (n,), generator=g).float(),
        "zeros": torch.where(torch.rand(n, generator=g) < 0.9, 0.0, 1.0),
        "constant": torch.full((n,), 0.25),
        "distinct": torch.rand(n, generator=g),
    }[case]
    for keep in (1, 7, n // 5, n // 2, n - 1, n):
        expected = stable_top_k(mag, keep)
        cut = top_k_cut(mag, keep)
        assert torch.equal(top_k_mask(mag, cut)[0], expected), (case, keep)
        seen, parts = 0, []
        for start in range(0, n, 4099):
            part, seen = top_k_mask(mag[start : start + 4099], cut, seen)
            parts.append(part)
        assert torch.equal(torch.cat(parts), expected), (case, keep)


def test_ascending_rank_window_equals_stable_sort():
    g = torch.Generator().manual_seed(4)
    n = 70_001
    for mag in (torch.randint(0, 4, (n,), generator=g).float(), torch.rand(n, generator=g)):
        order = torch.sort(mag, stable=True).indices
        for lo, hi in ((0, n // 3), (n // 4, n // 2), (17, n - 3), (n // 2, n), (0, n), (5, 5)):
            expected = torch.zeros(n, dtype=torch.bool)
            expected[order[lo:hi]] = True
            assert torch.equal(ascending_rank_window(mag, lo, hi), expected), (lo, hi)


def test_breadcrumbs_band_is_the_stable_sort_band_on_ties():
    from study.methods.breadcrumbs import outlier_band

    base, tensors = tied_bf16()
    delta = tensors[0] - base
    n = delta.numel()
    keep, drop_top = int(0.6 * n), int(0.05 * n)
    order = torch.sort(delta.abs().flatten(), stable=True).indices
    expected = torch.zeros(n)
    expected[order[n - keep - drop_top : n - drop_top]] = 1
    band = outlier_band(delta, 0.6, 0.05)
    assert torch.equal(band, delta * expected.view_as(delta))
    assert int((band != 0).sum()) == keep


@pytest.fixture
def stable_argsort(monkeypatch):
    """mergekit's ``magnitude`` takes ``torch.argsort(|x|, descending=True)[:k]``, which is not stable on the CPU
    (its choice among equal magnitudes is the kernel's): made stable, it is our rule."""
    argsort = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda t, *a, **kw: argsort(t, *a, **{**kw, "stable": True}))


@pytest.mark.parametrize("density", [0.05, 0.2, 0.7])
def test_equal_to_mergekit_magnitude_on_bf16_ties(density, stable_argsort):
    sparsify = pytest.importorskip("mergekit.sparsify")
    base, tensors = tied_bf16(shape=(384, 512))
    delta = tensors[1] - base
    assert torch.equal(keep_top_magnitude(delta, density), sparsify.magnitude(delta, density))


def test_same_count_and_same_entries_above_the_threshold_as_unpatched_mergekit():
    sparsify = pytest.importorskip("mergekit.sparsify")
    base, tensors = tied_bf16(shape=(384, 512))
    delta = tensors[0] - base
    ours, theirs = keep_top_magnitude(delta, 0.2), sparsify.magnitude(delta, 0.2)
    assert int((ours != 0).sum()) == int((theirs != 0).sum()) == int(0.2 * delta.numel())
    threshold = float(ours.abs()[ours != 0].min())
    above = delta.abs() > threshold
    assert torch.equal(ours[above], theirs[above])


def _task_vectors(family, k):
    inputs = open_inputs(family.base, family.checkpoints[:k])
    return inputs, [(n, b, [t - b for t in ts]) for n, b, ts in inputs.iter_tensors() if b.is_floating_point()]


@pytest.mark.parametrize("density", [0.2, 0.5])
def test_global_scope_keeps_exactly_floor_density_n_with_ties_in_tensor_order(qwen3_family, density):
    """One checkpoint, so the merged delta is its trimmed task vector; the reference ranks the whole task
    vector, tensors in the base's order, with a stable sort."""
    inputs, table = _task_vectors(qwen3_family, 1)
    flat = torch.cat([tvs[0].flatten() for _, _, tvs in table])
    keep = int(density * flat.numel())
    assert int((flat.abs() >= flat.abs().sort(descending=True).values[keep - 1]).sum()) > keep  # ties to break
    assert int((flat != 0).sum()) > keep
    expected = stable_top_k(flat, keep)
    info = get_method("ties")
    merged = merge_state_dict(inputs, info, info.resolve_params({"density": density, "trim_scope": "global"}, 1))
    got = torch.cat([(merged[n].float() - b).flatten() != 0 for n, b, _ in table])
    assert int(got.sum()) == keep
    assert torch.equal(got, expected)


def test_tensor_scope_on_a_bf16_family_keeps_exactly_the_count_per_tensor(qwen3_family):
    inputs, table = _task_vectors(qwen3_family, 1)
    info = get_method("ties")
    merged = merge_state_dict(inputs, info, info.resolve_params({"density": 0.2}, 1))
    tied = 0
    for name, base, (tv,) in table:
        keep = max(1, int(0.2 * tv.numel()))
        if int((tv != 0).sum()) < keep:
            continue
        kept = (merged[name].float() - base) != 0
        assert torch.equal(kept, stable_top_k(tv, keep)), name
        tied += int((tv.abs() >= tv.abs().flatten().sort(descending=True).values[keep - 1]).sum()) > keep
    assert tied > 3  # the bf16 family does have ties at the threshold


def test_normalize_false_is_the_agreeing_sum():
    base, tensors = tied_bf16(shape=(64, 32))
    weight = [1.0, 2.0]
    deltas = torch.stack([keep_top_magnitude(t - base, 0.5) for t in tensors])
    w = torch.tensor(weight).view(-1, 1, 1)
    elected = torch.where((deltas * w).sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    expected = (deltas * w * agree).sum(0)
    got = get_method("ties").fn(base, tensors, weight=weight, density=0.5, normalize=False)
    assert torch.equal(got, base + expected)
    normalised = get_method("ties").fn(base, tensors, weight=weight, density=0.5)
    assert not torch.equal(got, normalised)


def test_boost_order_before_normalize_is_the_903c139_formula():
    from study.methods.subspace_boosting import boost

    g = torch.Generator().manual_seed(5)
    base = torch.randn(48, 40, generator=g)
    tensors = [base + 0.1 * torch.randn(48, 40, generator=g) for _ in range(3)]
    fn, name = get_method("subspace_boosting").fn, "model.layers.0.mlp.up_proj.weight"
    common = dict(base_method="ties", density=0.4, lambda_=0.7, beta=0.2, weight=[1.0, 1.0, 2.0], tensor_name=name)
    deltas = torch.stack([keep_top_magnitude(t - base, 0.4) for t in tensors])
    w = torch.tensor([1.0, 1.0, 2.0]).view(-1, 1, 1)
    elected = torch.where((deltas * w).sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    total, divisor = (deltas * w * agree).sum(0), (w * agree).sum(0)
    divisor[divisor == 0] = 1
    before = fn(base, tensors, boost_order="before_normalize", **common)
    torch.testing.assert_close(before, base + 0.7 * boost(total, 0.2) / divisor, atol=1e-5, rtol=1e-5)
    after = fn(base, tensors, **common)
    torch.testing.assert_close(after, base + 0.7 * boost(total / divisor, 0.2), atol=1e-5, rtol=1e-5)
    assert float((before - after).abs().max()) > 1e-3
    other = "model.layers.0.input_layernorm.weight"  # not a projection: no boost, order irrelevant
    assert torch.equal(fn(base, tensors, boost_order="before_normalize", **{**common, "tensor_name": other}),
                       fn(base, tensors, **{**common, "tensor_name": other}))
    ta = dict(common, base_method="task_arithmetic")
    assert torch.equal(fn(base, tensors, boost_order="before_normalize", **ta), fn(base, tensors, **ta))


@pytest.mark.parametrize("method", ["tsv_merge", "iso_c"])
def test_alpha_applies_false_ignores_alpha_as_the_fork_did_at_3f031f3(method):
    g = torch.Generator().manual_seed(6)
    base = torch.randn(24, 16, generator=g)
    tensors = [base + 0.1 * torch.randn(24, 16, generator=g) for _ in range(2)]
    fn = get_method(method).fn
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
        unscaled = fn(base, tensors, alpha=1.0, tensor_name=name)
        assert torch.equal(fn(base, tensors, alpha=0.3, alpha_applies=False, tensor_name=name), unscaled)
        torch.testing.assert_close(fn(base, tensors, alpha=0.3, tensor_name=name) - base, 0.3 * (unscaled - base))


def test_model_stock_keeps_the_base_where_the_ratio_is_singular():
    from study.methods.model_stock import model_stock, stock_ratio

    base = torch.zeros(4, 4)
    up = torch.ones(4, 4)
    tensors = [up, -up]  # cos θ = −1, T = 2: 1 + (T − 1)·cos θ = 0
    assert stock_ratio(base, tensors) == 0.0
    assert torch.equal(model_stock(base, tensors), base)


@pytest.mark.parametrize("name", ["ties", "subspace_boosting", "aim"])
def test_methods_that_trim_by_magnitude_are_at_version_2(name):
    assert get_method(name).version == 2
