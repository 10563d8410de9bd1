"""The finiteness check every merge input goes through: exact for NaN, +Inf and -Inf at any position."""

import pytest
import torch

from study.tensors import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 65), (1024, 129)])
def test_one_bad_entry_anywhere_is_found(dtype, bad, shape):
    # First, last, and a few positions in the vectorised body and in the scalar tail of the reduction.
    n = torch.Size(shape).numel()
    for pos in sorted({0, n - 1, n // 2, max(0, n - 3), min(n - 1, 17)}):
        t = torch.randn(shape).to(dtype)
        assert all_finite(t)
        t.view(-1)[pos] = bad
        assert not all_finite(t), (dtype, bad, shape, pos)


def test_non_contiguous_views_and_trivial_tensors():
    t = torch.randn(64, 48)
    view = t.t()[::2]
    assert all_finite(view)
    t[10, 0] = float("nan")
    assert not all_finite(t.t()[::2])
    assert all_finite(torch.empty(0))
    assert all_finite(torch.arange(10))
    assert all_finite(torch.zeros(3, dtype=torch.bool))


def test_largest_finite_values_are_finite():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        info = torch.finfo(dtype)
        assert all_finite(torch.tensor([info.max, info.min, info.tiny, -0.0], dtype=dtype))
