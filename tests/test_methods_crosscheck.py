"""Native methods against the reference libraries, on the same tiny float32 Llama family.

mergekit runs through our ``mergekit:<name>`` adapter (its Python API), so these also exercise the adapter
path of the driver. PEFT's ``merge_utils`` functions return the merged delta; they are fed the same task
vectors. DARE is random: PEFT draws its masks from ``torch.bernoulli``, which the test replaces by our seeded
masks, so the comparison is exact on the arithmetic (drop, rescale by 1/density, sign election, disjoint mean)
while the mask source is tested separately (seeded, ``density`` fraction kept).
"""

from __future__ import annotations

import pytest
import torch

from study.merge import merge_state_dict, open_inputs
from study.methods.common import dare_mask
from study.methods.registry import get_method
from study.tensors import EMBEDDING_MARKERS

F32 = dict(atol=2e-6, rtol=1e-5)


def run(base, ckpts, name, **given):
    info = get_method(name)
    inputs = open_inputs(base if info.needs_base else None, ckpts)
    return merge_state_dict(inputs, info, info.resolve_params(given, len(ckpts)))


def compare(ours, theirs, skip_embeddings=False, exact=False):
    assert ours.keys() == theirs.keys()
    for n in ours:
        if skip_embeddings and any(m in n for m in EMBEDDING_MARKERS):
            continue
        if exact:
            assert torch.equal(ours[n], theirs[n]), f"{n}: max diff {float((ours[n] - theirs[n]).abs().max())}"
        else:
            torch.testing.assert_close(ours[n], theirs[n], **F32, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize(
    "native, adapter, params, skip_embeddings, exact",
    [
        ("task_arithmetic", "task_arithmetic", {"lambda": 0.7, "weight": [1.0, 0.5, 2.0]}, False, True),
        ("ties", "ties", {"density": 0.3, "lambda": 0.9}, True, False),
        ("ties", "ties", {"density": 0.3, "lambda": 0.9, "normalize": False}, True, False),
        ("linear", "linear", {"weight": [1.0, 2.0, 3.0]}, False, False),
        ("model_stock", "model_stock", {}, False, False),
        ("breadcrumbs", "breadcrumbs", {"density": 0.6, "gamma": 0.05}, False, False),
    ],
)
def test_native_equals_mergekit(llama_family, mergekit_api, native, adapter, params, skip_embeddings, exact):
    ckpts = llama_family.checkpoints[:3]
    ours = run(llama_family.base, ckpts, native, **params)
    mk_params = dict(params)
    if native == "ties":
        mk_params["density"] = [params["density"]] * 3
        mk_params["normalize"] = params.get("normalize", True)
    if native == "breadcrumbs":
        mk_params = {"density": [0.6] * 3, "gamma": [0.05] * 3}
    if native == "task_arithmetic":
        mk_params["normalize"] = False
    theirs = run(llama_family.base, ckpts, f"mergekit:{adapter}", **mk_params)
    compare(ours, theirs, skip_embeddings, exact)


def test_ties_equals_mergekit_on_bf16_ties_at_the_threshold(qwen3_family, mergekit_api, monkeypatch):
    """The bf16 family has many equal magnitudes at the trim threshold: both keep exactly floor(density*n),
    and mergekit's argsort, made stable, keeps the same lowest-index ties as ours."""
    argsort = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda t, *a, **kw: argsort(t, *a, **{**kw, "stable": True}))
    ckpts = qwen3_family.checkpoints[:3]
    ours = run(qwen3_family.base, ckpts, "ties", density=0.2)
    theirs = run(qwen3_family.base, ckpts, "mergekit:ties", density=[0.2] * 3, normalize=True)
    compare(ours, theirs, skip_embeddings=True)


def test_slerp_equals_mergekit_with_first_checkpoint_as_base(llama_family, mergekit_api):
    a, b = llama_family.checkpoints[:2]
    ours = run(llama_family.base, [a, b], "slerp", t=0.3)
    theirs = run(a, [b], "mergekit:slerp", t=0.3)
    compare(ours, theirs)


def task_vector_table(family, k=3):
    inputs = open_inputs(family.base, family.checkpoints[:k])
    return [(name, base, [t - base for t in tensors], tensors) for name, base, tensors in inputs.iter_tensors()]


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "dare_linear", "dare_ties"])
def test_native_equals_peft_merge_utils(llama_family, monkeypatch, name):
    from peft.utils import merge_utils

    density = 0.3
    fn = get_method(name).fn
    for tensor_name, base, deltas, tensors in task_vector_table(llama_family):
        weights = torch.ones(len(deltas))
        if name == "task_arithmetic":
            ours, theirs = fn(base, tensors, weight=[1.0] * 3, lambda_=1.0), merge_utils.task_arithmetic(deltas, weights)
        elif name == "ties":
            ours = fn(base, tensors, weight=[1.0] * 3, density=density, tensor_name=tensor_name)
            theirs = merge_utils.ties(deltas, weights, density)
        else:
            masks = [dare_mask(d.shape, density, 5, i, tensor_name) for i, d in enumerate(deltas)]
            monkeypatch.setattr(torch, "bernoulli", lambda probs, masks=iter(masks): next(masks))
            ours = fn(base, tensors, weight=[1.0] * 3, density=density, seed=5, tensor_name=tensor_name)
            theirs = getattr(merge_utils, name)(deltas, weights, density)
            monkeypatch.undo()
        torch.testing.assert_close(ours - base, theirs, **F32, msg=lambda m: f"{name} {tensor_name}: {m}")


def test_dare_at_density_one_is_task_arithmetic_and_untrimmed_ties(llama_family):
    ckpts = llama_family.checkpoints[:3]
    compare(run(llama_family.base, ckpts, "dare_linear", density=1.0), run(llama_family.base, ckpts, "task_arithmetic"), exact=True)
    compare(run(llama_family.base, ckpts, "dare_ties", density=1.0), run(llama_family.base, ckpts, "ties", density=1.0), exact=True)
