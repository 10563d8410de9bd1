"""The new task-vector-family methods against mergekit, through our ``mergekit:<name>`` adapter (its Python API,
``run_merge``), on the tiny float32 Llama family and, for breadcrumbs_ties, the bf16 Qwen3 family.

della and della_linear draw random masks. **Shared masks**: both sides draw mask = (u < p) with u seeded by the
bytes of the keep probabilities p (mergekit's ``torch.bernoulli`` and our ``draw_keep`` are monkeypatched to
that one function), so the masks coincide exactly when the probabilities do, and the comparison is exact on the
probabilities, the rescaling (l1 = mergekit's ``rescale: true``, none = ``false``), the sign election and the
normalisation. mergekit's ``argsort`` is made stable, as ours ranks equal magnitudes by position (the Llama
family has a row with two equal magnitudes). Our own seeded draw is checked **distributionally** against
mergekit's unpatched ``della_magprune`` (keep rate per magnitude-rank decile). Where our defaults differ from
mergekit's (rescale: probability, the paper's), see the methods' ``mergekit_note``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from study.merge import merge_state_dict, open_inputs
from study.methods import task_vector_family
from study.methods.registry import get_method
from study.methods.task_vector_family import MagPrune

F32 = dict(atol=2e-6, rtol=1e-5)
WEIGHT = [1.0, 0.5, 2.0]


def run(family, name, **given):
    ckpts = family.checkpoints[:3]
    info = get_method(name)
    return merge_state_dict(open_inputs(family.base, ckpts), info, info.resolve_params(given, len(ckpts)))


def compare(ours, theirs):
    assert ours.keys() == theirs.keys()
    for n in ours:
        torch.testing.assert_close(ours[n], theirs[n], **F32, msg=lambda m, n=n: f"{n}: {m}")


def shared_mask(probs: torch.Tensor) -> torch.Tensor:
    """The one mask both sides draw: u < p, u from a generator seeded by the bytes of p."""
    digest = hashlib.sha256(probs.float().contiguous().numpy().tobytes()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return (torch.rand(tuple(probs.shape), generator=gen) < probs).to(probs.dtype)


@pytest.fixture
def stable_sorts(monkeypatch):
    """mergekit's argsort and sort made stable: equal magnitudes in position order, as ours."""
    argsort, sort = torch.argsort, torch.sort
    monkeypatch.setattr(torch, "argsort", lambda t, *a, **kw: argsort(t, *a, **{**kw, "stable": True}))
    monkeypatch.setattr(torch, "sort", lambda t, *a, **kw: sort(t, *a, **{**kw, "stable": True}))


@pytest.mark.parametrize("rescale, mk_rescale", [("l1", True), ("none", False)])
@pytest.mark.parametrize("name", ["della", "della_linear"])
def test_della_equals_mergekit_with_shared_masks(llama_family, mergekit_api, monkeypatch, stable_sorts, name, rescale,
                                                  mk_rescale):
    monkeypatch.setattr(torch, "bernoulli", shared_mask)
    monkeypatch.setattr(task_vector_family, "draw_keep", lambda probs, seed: shared_mask(probs))
    params = {"density": 0.6, "epsilon": 0.2, "weight": WEIGHT, "lambda": 0.9}
    ours = run(llama_family, name, **params, rescale=rescale)
    theirs = run(llama_family, f"mergekit:{name}", density=[0.6] * 3, epsilon=[0.2] * 3, weight=WEIGHT,
                 rescale=mk_rescale, normalize=name == "della", **{"lambda": 0.9})
    compare(ours, theirs)


def test_della_masks_match_mergekit_in_distribution(mergekit_api):
    """Unpatched: our seeded masks and mergekit's global-generator masks keep each magnitude-rank decile of a
    row at the same rate (both within 4 binomial standard deviations of the mean keep probability)."""
    from mergekit.sparsify import della_magprune

    g = torch.Generator().manual_seed(5)
    delta = torch.randn(200, 1000, generator=g)
    torch.manual_seed(0)
    theirs = della_magprune(delta, 0.5, 0.3) != 0
    ours = MagPrune(0.5, 0.3, 0, "none").thin(delta, "x") != 0
    ranks = delta.abs().argsort(dim=1).argsort(dim=1)
    for decile in range(10):
        inside = (ranks >= 100 * decile) & (ranks < 100 * (decile + 1))
        target = 0.2 + 0.6 * (decile + 0.5) / 10  # mean p over the decile: 0.5 - 0.3 + 0.6 * rank
        sd = (target * (1 - target) / int(inside.sum())) ** 0.5
        for kept in (ours, theirs):
            assert abs(float(kept[inside].float().mean()) - target) < 4 * sd + 1e-3, decile


@pytest.mark.parametrize("normalize", [False, True])
def test_breadcrumbs_ties_equals_mergekit(llama_family, mergekit_api, normalize):
    ours = run(llama_family, "breadcrumbs_ties", density=0.6, gamma=0.05, weight=WEIGHT, normalize=normalize)
    theirs = run(llama_family, "mergekit:breadcrumbs_ties", density=[0.6] * 3, gamma=[0.05] * 3, weight=WEIGHT,
                 normalize=normalize)
    compare(ours, theirs)


def test_breadcrumbs_ties_equals_mergekit_on_bf16_with_stable_sort(qwen3_family, mergekit_api, stable_sorts):
    """The bf16 family has many equal magnitudes at the band's edges: with mergekit's sort made stable both keep
    the same entries."""
    ours = run(qwen3_family, "breadcrumbs_ties", density=0.5, gamma=0.05)
    theirs = run(qwen3_family, "mergekit:breadcrumbs_ties", density=[0.5] * 3, gamma=[0.05] * 3)
    compare(ours, theirs)


@pytest.mark.parametrize("select_topk", [1.0, 0.3])
def test_sce_equals_mergekit(llama_family, mergekit_api, select_topk):
    ours = run(llama_family, "sce", select_topk=select_topk)
    compare(ours, run(llama_family, "mergekit:sce", select_topk=select_topk))
