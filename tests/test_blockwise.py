"""Block-wise merging (study.methods.common.blocks) is entry for entry the same as whole-tensor merging.

Tiny test models have tensors smaller than one block, so these tensors span several blocks and a ragged
last one; the reference is the plain whole-tensor formula.
"""

import pytest
import torch

from study.merge import _merge_in_blocks
from study.methods.common import BLOCK_ELEMENTS, disjoint_merge, keep_top_magnitude
from study.methods.registry import get_method
from study.methods.ties import ties_delta

SHAPE = (3 * BLOCK_ELEMENTS // 512 + 7, 512)  # three full blocks and a partial one


def family(k: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(k)
    base = torch.randn(SHAPE, generator=g)
    return base.to(dtype), [(base + 0.01 * torch.randn(SHAPE, generator=g)).to(dtype) for _ in range(k)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name,params", [("task_arithmetic", {"lambda": 0.7, "weight": [1.0, 0.5, 2.0]}),
                                         ("linear", {"weight": [1.0, 0.5, 2.0]})])
def test_elementwise_methods_in_blocks_equal_whole_tensors(dtype, name, params):
    info = get_method(name)
    base, tensors = family(3, dtype)
    kwargs = info.call_kwargs(info.resolve_params(params, n_models=3))
    whole = info.fn(base.float(), [t.float() for t in tensors], **kwargs).to(dtype)
    blocked = _merge_in_blocks(info, base, tensors, dtype, kwargs)
    assert torch.equal(whole, blocked)


@pytest.mark.parametrize("density", [0.2, 1.0])
def test_ties_in_blocks_equals_whole_tensor_trim_and_disjoint_merge(density):
    base, tensors = family(3)
    weight = [1.0, 0.5, 2.0]
    reference = disjoint_merge(torch.stack([keep_top_magnitude(t - base, density) for t in tensors]), weight)
    assert torch.equal(ties_delta(base, tensors, weight, density), reference)


def test_a_nan_in_a_late_block_names_its_checkpoint():
    from study.errors import MergeInputError

    info = get_method("task_arithmetic")
    base, tensors = family(2)
    tensors[1].view(-1)[-5] = float("nan")  # in the ragged last block
    kwargs = info.call_kwargs(info.resolve_params({}, n_models=2))
    with pytest.raises(MergeInputError, match="tensor w of ckpt-1 has non-finite"):
        _merge_in_blocks(info, base, tensors, torch.float32, kwargs, "w", ["base", "ckpt-0", "ckpt-1"])


@pytest.mark.parametrize("case", ["normal", "ties", "constant", "heavy_tail", "sorted", "tiny_k", "top_k"])
def test_kth_smallest_is_exactly_kthvalue(case):
    from study.methods.common import SAMPLE_SIZE, kth_smallest

    n = 5 * SAMPLE_SIZE + 123
    g = torch.Generator().manual_seed(7)
    values = {
        "normal": torch.randn(n, generator=g).abs(),
        "ties": torch.randint(0, 5, (n,), generator=g).float(),
        "constant": torch.full((n,), 0.25),
        "heavy_tail": torch.randn(n, generator=g).abs() ** 6,
        "sorted": torch.arange(n, dtype=torch.float32),
        "tiny_k": torch.randn(n, generator=g).abs(),
        "top_k": torch.randn(n, generator=g).abs(),
    }[case]
    ks = {"tiny_k": [1, 2, 50], "top_k": [n - 50, n - 1, n]}.get(case, [int(0.8 * n) + 1, n // 2, 17])
    for k in ks:
        assert torch.equal(kth_smallest(values, k), torch.kthvalue(values, k).values), (case, k)
