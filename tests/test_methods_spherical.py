"""The spherical methods (nuslerp, karcher, multislerp) against mergekit 0.1.5, and their own geometry.

Two cross-checks, both to float32 tolerance: whole merges of the tiny float32 Llama family against the
``mergekit:<name>`` adapter (mergekit's ``run_merge``; the adapter gives mergekit the base for nuslerp and
multislerp, none for karcher, which ignores bases), and single tensors against mergekit's method objects called
directly (``registry.get(name)([TensorGroup])``), which reaches what a whole merge cannot: no base
(``use_base: false``), 1-D and 3-D tensors, and the edge cases (collinear, zero, opposite, cancelling inputs).
Then properties that tie the methods to each other and to ``slerp``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.errors import MethodError, NotApplicable
from study.merge import merge_state_dict, open_inputs
from study.methods.registry import get_method

F32 = dict(atol=2e-6, rtol=1e-5)


def run(base, ckpts, name, **given):
    info = get_method(name)
    inputs = open_inputs(base if info.needs_base else None, ckpts)
    return merge_state_dict(inputs, info, info.resolve_params(given, len(ckpts)))


def compare(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for n in ours:
        torch.testing.assert_close(ours[n], theirs[n], **F32, msg=lambda m, n=n: f"{n}: {m}")


def native(name: str, base, tensors, **given):
    """The native method on plain tensors, parameters resolved and checked as the driver does."""
    info = get_method(name)
    params = info.call_kwargs(info.resolve_params(given, len(tensors)))
    return info.fn(base if info.needs_base else None, list(tensors), **params)


def mergekit_direct(name: str, tensors, base=None, **params):
    """mergekit's own method object on one tensor group (the base first, marked as the base, when given)."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    inputs = ([base] if base is not None else []) + list(tensors)
    group = TensorGroup.from_tensors(inputs, base_index=0 if base is not None else None)
    (out,) = registry.get(name)([group], parameters=params)
    return out


@pytest.mark.parametrize(
    "name, k, params",
    [
        ("nuslerp", 2, {"weight": [1.0, 2.0]}),
        ("nuslerp", 2, {"weight": [0.3, 0.7], "nuslerp_flatten": False}),
        ("nuslerp", 2, {"weight": [0.3, 0.7], "nuslerp_flatten": False, "nuslerp_row_wise": True}),
        ("karcher", 3, {}),
        ("karcher", 2, {"max_iter": 3, "tol": 1e-4}),
        ("multislerp", 3, {"weight": [1.0, 2.0, 3.0]}),
        ("multislerp", 4, {"weight": [0.5, 1.0, 1.5, 2.0], "normalize_weights": False}),
    ],
)
def test_native_equals_the_mergekit_adapter(llama_family, mergekit_api, name, k, params):
    ckpts = llama_family.checkpoints[:k]
    compare(run(llama_family.base, ckpts, name, **params), run(llama_family.base, ckpts, f"mergekit:{name}", **params))


@pytest.mark.parametrize("name, params",
                         [("nuslerp", {"weight": [2.0, 1.0]}), ("multislerp", {"weight": [1.0, 3.0, 2.0]})])
def test_without_a_base_equals_mergekit_without_base_model(llama_family, mergekit_api, tmp_path, name, params):
    """``use_base: false`` is mergekit's configuration without ``base_model`` (run through the adapter's runner)."""
    from safetensors.torch import load_file

    from study.adapters.mergekit import mergekit_method, run_mergekit

    k = len(params["weight"])
    ckpts = llama_family.checkpoints[:k]
    ours = run(llama_family.base, ckpts, name, use_base=False, **params)
    info = mergekit_method(f"mergekit:{name}", name)
    run_mergekit(name, None, llama_family.base, ckpts, info.resolve_params(params, k), info.params, tmp_path)
    theirs = {n: t for f in sorted(Path(tmp_path).glob("*.safetensors")) for n, t in load_file(f).items()}
    compare(ours, theirs)


def _shapes():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=gen) for shape in [(7, 5), (40,), (3, 4, 6)]]


@pytest.mark.parametrize("use_base", [True, False])
@pytest.mark.parametrize("flatten, row_wise", [(True, False), (False, False), (False, True)])
def test_nuslerp_equals_mergekit_on_any_shape(mergekit_api, use_base, flatten, row_wise):
    gen = torch.Generator().manual_seed(1)
    for base in _shapes():
        a, b = (base + torch.randn(base.shape, generator=gen) for _ in range(2))
        params = {"weight": [0.25, 0.75], "nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise}
        ours = native("nuslerp", base, [a, b], use_base=use_base, **params)
        theirs = mergekit_direct("nuslerp", [a, b], base if use_base else None, **params)
        torch.testing.assert_close(ours, theirs, **F32)


def test_nuslerp_edge_cases_equal_mergekit(mergekit_api):
    """Collinear vectors (linear fallback), a zero vector, and weights that cancel (t = 0.5)."""
    a = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    cases = [([a, 2 * a], [1.0, 3.0]), ([a, -a], [1.0, 1.0]), ([a, torch.zeros_like(a)], [1.0, 2.0]),
             ([a, a.flip(0)], [1.0, -1.0])]
    for tensors, weight in cases:
        for flatten in (True, False):
            params = {"weight": weight, "nuslerp_flatten": flatten}
            ours = native("nuslerp", a, tensors, use_base=False, **params)
            torch.testing.assert_close(ours, mergekit_direct("nuslerp", tensors, **params), **F32)
            assert torch.isfinite(ours).all()


@pytest.mark.parametrize("use_base", [True, False])
def test_multislerp_equals_mergekit_on_any_shape(mergekit_api, use_base):
    gen = torch.Generator().manual_seed(3)
    for base in _shapes():
        for k, normalize in [(2, True), (3, False), (5, True)]:
            tensors = [base + torch.randn(base.shape, generator=gen) for _ in range(k)]
            params = {"weight": [float(i + 1) for i in range(k)], "normalize_weights": normalize}
            ours = native("multislerp", base, tensors, use_base=use_base, **params)
            theirs = mergekit_direct("multislerp", tensors, base if use_base else None, **params)
            torch.testing.assert_close(ours, theirs, **F32)


def test_multislerp_edge_cases(mergekit_api):
    """Opposite inputs: k = 2 falls back to the weighted sum as mergekit; k > 2 is an error naming the tensor,
    where mergekit raises; a large eps is followed too; one checkpoint comes back unchanged."""
    a = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    base = torch.randn(5, 3, generator=torch.Generator().manual_seed(5))
    ours = native("multislerp", base, [a, -a], use_base=False)
    torch.testing.assert_close(ours, mergekit_direct("multislerp", [a, -a], weight=[1.0, 1.0]), **F32)
    torch.testing.assert_close(ours, torch.zeros_like(a), **F32)
    small = torch.randint(-8, 8, (5, 3), generator=torch.Generator().manual_seed(12)).float()  # exact arithmetic:
    pair = [base.round() + small, base.round() - small]  # the task vectors are exactly opposite
    with_base = native("multislerp", base.round(), pair, weight=[1.0, 1.0])
    torch.testing.assert_close(with_base, mergekit_direct("multislerp", pair, base.round(), weight=[1.0, 1.0]), **F32)
    torch.testing.assert_close(with_base, base.round(), **F32)
    b = torch.randn(5, 3, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match="weighted sum of the input tensors is zero"):
        mergekit_direct("multislerp", [a, -a, b], weight=[1.0, 1.0, 0.0])
    with pytest.raises(MethodError, match="tensor t.weight: the weighted directions of the 3 inputs cancel"):
        get_method("multislerp").fn(base, [a, -a, b], weight=[1.0, 1.0, 0.0], use_base=False, tensor_name="t.weight")
    tensors = [a, b, a + b]
    torch.testing.assert_close(native("multislerp", base, tensors, use_base=False, eps=0.3),
                               mergekit_direct("multislerp", tensors, weight=[1.0] * 3, eps=0.3), **F32)
    assert torch.equal(native("multislerp", base, [a]), a)
    with pytest.raises(MethodError, match="sum to 0"):
        native("multislerp", base, [a, b], weight=[1.0, -1.0])


def test_karcher_edge_cases_equal_mergekit(mergekit_api):
    """Opposite directions (the mean starts from the first), a zero checkpoint (no direction, but its norm counts
    in the scale), all zeros (zeros), identical directions, and one checkpoint (returned)."""
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
    zero = torch.zeros_like(a)
    for tensors in ([a, -a], [a, -a, b], [a, zero, b], [zero, zero], [a, 3 * a], [a, b, 2 * b, -a], [a]):
        ours = native("karcher", None, tensors)
        torch.testing.assert_close(ours, mergekit_direct("karcher", tensors), **F32)
    assert torch.equal(native("karcher", None, [zero, zero]), zero)


def _unit(x):
    return x / torch.linalg.vector_norm(x)


def test_karcher_of_two_is_slerp_at_one_half_of_the_directions():
    gen = torch.Generator().manual_seed(8)
    a, b = torch.randn(30, 20, generator=gen), 3 * torch.randn(30, 20, generator=gen)
    mean_norm = (torch.linalg.vector_norm(a) + torch.linalg.vector_norm(b)) / 2
    expected = mean_norm * get_method("slerp").fn(None, [_unit(a), _unit(b)], t=0.5)
    torch.testing.assert_close(native("karcher", None, [a, b]), expected, **F32)
    same_norm = _unit(b) * torch.linalg.vector_norm(a)
    torch.testing.assert_close(native("karcher", None, [a, same_norm]), native("slerp", None, [a, same_norm]), **F32)


def test_karcher_is_the_geodesic_mean():
    """At the result, the weighted sum of the log maps (the Riemannian gradient) vanishes; with no step it is the
    normalised mean of the directions, which is multislerp's result for equal weights."""
    gen = torch.Generator().manual_seed(9)
    tensors = [torch.randn(50, generator=gen) + 2 for _ in range(4)]
    direction = _unit(native("karcher", None, tensors, max_iter=100, tol=1e-7))
    gradient = torch.zeros_like(direction)
    for u in map(_unit, tensors):
        cos = torch.dot(direction, u).clamp(-1, 1)
        gradient += torch.acos(cos) / torch.sin(torch.acos(cos)) * (u - cos * direction)
    assert float(torch.linalg.vector_norm(gradient)) < 1e-4
    no_step = native("karcher", None, tensors, max_iter=0)
    torch.testing.assert_close(no_step, native("multislerp", tensors[0], tensors, use_base=False), **F32)
    assert float(torch.linalg.vector_norm(_unit(no_step) - direction)) > 1e-4  # the iteration moved it


def test_nuslerp_is_slerp_by_weights_and_multislerp_of_two_is_the_midpoint():
    gen = torch.Generator().manual_seed(10)
    base = torch.randn(12, 9, generator=gen)
    a, b = base + torch.randn(12, 9, generator=gen), base + 2 * torch.randn(12, 9, generator=gen)
    for t in (0.0, 0.3, 1.0):
        torch.testing.assert_close(native("nuslerp", base, [a, b], weight=[1 - t, t], use_base=False),
                                   native("slerp", None, [a, b], t=t), **F32)
    torch.testing.assert_close(native("nuslerp", base, [a, b], weight=[3.0, 1.0]),
                               base + native("slerp", None, [a - base, b - base], t=0.25), **F32)
    torch.testing.assert_close(native("multislerp", base, [a, b], use_base=False), native("karcher", None, [a, b]),
                               **F32)


def test_multislerp_with_a_base_merges_task_vectors():
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(10, 4, generator=gen)
    tensors = [base + torch.randn(10, 4, generator=gen) for _ in range(3)]
    ours = native("multislerp", base, tensors, weight=[1.0, 2.0, 0.5])
    expected = base + native("multislerp", base, [t - base for t in tensors], weight=[1.0, 2.0, 0.5], use_base=False)
    torch.testing.assert_close(ours, expected, **F32)
    assert not torch.allclose(ours, native("multislerp", base, tensors, weight=[1.0, 2.0, 0.5], use_base=False))
    # weights are a ratio when normalised: scaling them changes nothing
    torch.testing.assert_close(native("multislerp", base, tensors, weight=[2.0, 4.0, 1.0]), ours, **F32)


def test_k_limits_and_parameter_ranges():
    nuslerp, karcher, multislerp = (get_method(n) for n in ("nuslerp", "karcher", "multislerp"))
    for k in (1, 3):
        with pytest.raises(NotApplicable, match="nuslerp applies to k in 2"):
            nuslerp.check_k(k)
    nuslerp.check_k(2)
    for info in (karcher, multislerp):
        for k in (1, 2, 9):
            info.check_k(k)
    assert (nuslerp.needs_base, karcher.needs_base, multislerp.needs_base) == (True, False, True)
    for info, given in [(karcher, {"tol": 0.0}), (karcher, {"max_iter": -1}), (multislerp, {"eps": 0.0}),
                        (nuslerp, {"nuslerp_flatten": "yes"})]:
        with pytest.raises(MethodError, match=next(iter(given))):
            info.resolve_params(given, 2)
