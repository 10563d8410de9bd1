"""The shared invariants of methods.md, for every registered method (plugins included), on tiny Llama and
Qwen3 families: shapes and dtypes, scale 0 → base, permutation invariance, T identical checkpoints →
that checkpoint, applicability by k. One table; a new method is covered by registering it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.errors import MethodError, NotApplicable
from study.merge import merge_state_dict, open_inputs
from study.methods.registry import get_method, method_names

NOT_PERMUTATION_INVARIANT = {"slerp", "dare_linear", "dare_ties"}
IDENTITY_PARAMS = {"linear": {}, "ties": {"density": 1.0}, "model_stock": {}}


def _k(info, wanted: int) -> int:
    k = max(wanted, info.min_k)
    return k if info.max_k is None else min(k, info.max_k)


def merge(family, name: str, checkpoints: list[Path], **given) -> dict[str, torch.Tensor]:
    info = get_method(name)
    inputs = open_inputs(family.base if info.needs_base else None, checkpoints)
    return merge_state_dict(inputs, info, info.resolve_params(given, len(checkpoints)))


def base_tensors(family) -> dict[str, torch.Tensor]:
    src = open_inputs(family.base, [family.base]).base
    return {n: src.get(n) for n in src.names()}


def assert_close(a: dict, b: dict, atol: float, what: str) -> None:
    assert a.keys() == b.keys(), what
    for n in a:
        diff = float((a[n].float() - b[n].float()).abs().max())
        assert diff <= atol, f"{what}: tensor {n} differs by {diff}"


def tolerance(family) -> float:
    return 2e-2 if family.arch == "qwen3" else 2e-5


def check_invariants(family, name: str) -> None:
    """Every shared invariant for one method on one family (also called for plugins installed in-test)."""
    info = get_method(name)
    k = _k(info, 3)
    ckpts = family.checkpoints[:k]
    base = base_tensors(family)
    merged = merge(family, name, ckpts)
    assert merged.keys() == base.keys()
    for n, t in merged.items():
        assert t.shape == base[n].shape and t.dtype == base[n].dtype, n
        assert torch.isfinite(t.float()).all(), n
    scale = next((p for p in ("lambda", "alpha") if any(q.name == p for q in info.params)), None)
    if scale is not None:
        assert_close(merge(family, name, ckpts, **{scale: 0.0}), base, 0.0, f"{name} with {scale} = 0")
    if name not in NOT_PERMUTATION_INVARIANT and k > 1:
        assert_close(merge(family, name, ckpts[::-1]), merged, tolerance(family), f"{name} permuted")
    if name in IDENTITY_PARAMS:
        same = [family.checkpoints[0]] * max(k, 2)
        expected = base_tensors(type(family)(family.checkpoints[0], [], family.arch))
        assert_close(merge(family, name, same, **IDENTITY_PARAMS[name]), expected, tolerance(family), f"{name} of copies")
    if info.min_k > 1:
        with pytest.raises(NotApplicable):
            merge(family, name, family.checkpoints[: info.min_k - 1])
    if info.max_k is not None:
        with pytest.raises(NotApplicable):
            merge(family, name, family.checkpoints[: info.max_k + 1])


@pytest.mark.parametrize("name", method_names())
def test_invariants(family, name):
    check_invariants(family, name)


def test_slerp_swaps_t(llama_family):
    a, b = llama_family.checkpoints[:2]
    forward = merge(llama_family, "slerp", [a, b], t=0.3)
    backward = merge(llama_family, "slerp", [b, a], t=0.7)
    assert_close(forward, backward, 1e-5, "slerp t <-> 1-t")


def test_dare_is_seeded_and_reproducible(llama_family):
    ckpts = llama_family.checkpoints[:2]
    one = merge(llama_family, "dare_ties", ckpts, seed=3)
    assert_close(merge(llama_family, "dare_ties", ckpts, seed=3), one, 0.0, "same seed")
    other = merge(llama_family, "dare_ties", ckpts, seed=4)
    assert any(not torch.equal(one[n], other[n]) for n in one)


def test_dare_keeps_density_and_rescales():
    from study.methods.common import dare_mask, dare_rescale

    mask = dare_mask((400, 500), 0.3, 0, 1, "x")
    assert abs(float(mask.mean()) - 0.3) < 0.01
    assert torch.equal(mask, dare_mask((400, 500), 0.3, 0, 1, "x"))
    assert not torch.equal(mask, dare_mask((400, 500), 0.3, 0, 2, "x"))
    delta = torch.ones(400, 500)
    kept = dare_rescale([delta], 0.3, 0, "x")[0]
    assert torch.allclose(kept.unique(), torch.tensor([0.0, 1 / 0.3])) and abs(float(kept.mean()) - 1) < 0.05


def test_ties_global_threshold_is_exact(llama_family):
    from study.methods.ties import global_cuts

    inputs = open_inputs(llama_family.base, llama_family.checkpoints[:2])
    for density in (0.05, 0.5, 1.0):
        cuts = global_cuts(inputs, density)
        for i, src in enumerate(inputs.checkpoints):
            mags = torch.cat([(src.get(n).float() - inputs.base.get(n).float()).abs().flatten() for n in inputs.tensor_names()])
            keep = max(1, int(density * mags.numel()))
            expected = 0.0 if keep >= mags.numel() else float(torch.sort(mags, descending=True).values[keep - 1])
            assert cuts[i].value == expected
            if keep < mags.numel():
                ties = cuts[i].ties if cuts[i].ties is not None else int((mags == expected).sum())
                assert int((mags > expected).sum()) + ties == keep


def test_ties_global_differs_from_tensor_scope(llama_family):
    ckpts = llama_family.checkpoints[:3]
    glob = merge(llama_family, "ties", ckpts, trim_scope="global", density=0.3)
    local = merge(llama_family, "ties", ckpts, trim_scope="tensor", density=0.3)
    assert any(not torch.equal(glob[n], local[n]) for n in glob)


def test_subspace_boosting_on_ties_and_aim_on_task_arithmetic_run(llama_family):
    ckpts = llama_family.checkpoints[:3]
    base = base_tensors(llama_family)
    boosted = merge(llama_family, "subspace_boosting", ckpts, base_method="ties", trim_scope="global")
    ties = merge(llama_family, "ties", ckpts, trim_scope="global")
    name = "model.layers.0.input_layernorm.weight"
    assert torch.equal(boosted[name], ties[name])
    aim = merge(llama_family, "aim", ckpts, inner_method="task_arithmetic", omega=1.0)
    assert_close(aim, merge(llama_family, "task_arithmetic", ckpts), 1e-6, "aim with omega 1")
    assert set(aim) == set(base)


def test_aim_protects_active_channels(llama_family, tmp_path):
    ckpts = llama_family.checkpoints[:2]
    text = tmp_path / "calibration.txt"
    text.write_text("what is 3 + 4?\nfirst letter of abc?\n")
    base = base_tensors(llama_family)
    ta = merge(llama_family, "task_arithmetic", ckpts)
    aim = merge(llama_family, "aim", ckpts, inner_method="task_arithmetic", omega=0.0, calibration=str(text))
    name = "model.layers.0.self_attn.q_proj.weight"
    ratio = (aim[name] - base[name]) / (ta[name] - base[name])
    per_channel = ratio.mean(0)
    assert float(per_channel.min()) >= -1e-4 and float(per_channel.max()) <= 1 + 1e-4
    assert float(per_channel.min()) < 1e-4
    assert torch.equal(aim["model.embed_tokens.weight"], ta["model.embed_tokens.weight"])
    assert torch.equal(aim["lm_head.weight"], ta["lm_head.weight"])


def test_bad_parameters_are_user_errors():
    with pytest.raises(MethodError, match="density"):
        get_method("ties").resolve_params({"density": 1.5}, 2)
    with pytest.raises(MethodError, match="did you mean 'lambda'"):
        get_method("ties").resolve_params({"lamda": 1.0}, 2)
    with pytest.raises(MethodError, match="trim_scope"):
        get_method("ties").resolve_params({"trim_scope": "layer"}, 2)


def test_describe_lists_every_method():
    from study.methods.describe import describe_methods, format_methods

    described = {m["name"]: m for m in describe_methods()}
    assert set(method_names()) <= set(described)
    assert described["slerp"]["applicable_k"] == "2"
    assert described["model_stock"]["applicable_k"] == "2..inf"
    assert any(p["name"] == "lambda" and p["default"] == 1.0 for p in described["ties"]["params"])
    assert "arxiv.org/abs/2306.01708" in described["ties"]["reference"]
    assert "mergekit:<name>" in format_methods()
