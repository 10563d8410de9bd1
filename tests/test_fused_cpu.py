"""Stored-dtype kernels (``fn.stored_kernel``: task arithmetic's fused C pass in study/fused_cpu.py, TIES' and
Model Stock's) are bit for bit the driver's float32 path, or not used."""

import pytest
import torch

from study import fused_cpu
from study.errors import MergeInputError
from study.merge import _merge_in_blocks
from study.methods.registry import get_method
from study.methods.task_arithmetic import task_arithmetic

needs_kernel = pytest.mark.skipif(not fused_cpu.available(), reason=f"fused kernel unavailable: {fused_cpu.why_not()}")


def _family(n: int, dtype: torch.dtype, k: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=g) * 0.05).to(dtype)
    tensors = [(base.float() + torch.randn(n, generator=g) * 0.003).to(dtype) for _ in range(k)]
    if n >= 20:  # signed zeros, zero task vectors
        base[:4] = torch.tensor([0.0, -0.0, -0.0, 0.0]).to(dtype)
        tensors[0][:4] = torch.tensor([-0.0, 0.0, -0.0, 0.0]).to(dtype)
        tensors[-1][10:20] = base[10:20]
    return base, tensors


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [1, 2047, 2049, (1 << 18) + 3, 3 << 19])  # one chunk, ragged, split across threads
@pytest.mark.parametrize("weights,lam", [(None, 1.0), ([0.25, -1.5, 0.7], 1 / 3), ([1.0, 1.0, 1.0], -0.5)])
def test_fused_equals_torch_blocks_bit_for_bit(dtype, n, weights, lam):
    base, tensors = _family(n, dtype, 3, seed=n)
    w = weights or [1.0, 1.0, 1.0]
    want = task_arithmetic(base.float(), [t.float() for t in tensors], weight=w, lambda_=lam).to(dtype)
    got = torch.empty(n, dtype=dtype)
    assert fused_cpu.task_arithmetic_into(got, base, tensors, w, lam)
    assert torch.equal(_bits(got), _bits(want))


@needs_kernel
def test_driver_uses_the_kernel_and_matches_the_block_path(monkeypatch):
    info = get_method("task_arithmetic")
    base, tensors = _family(3 << 18, torch.bfloat16, 4, seed=1)
    kwargs = info.call_kwargs(info.resolve_params({"lambda": 0.5}, n_models=4))
    fused = _merge_in_blocks(info, base, tensors, torch.bfloat16, kwargs)
    monkeypatch.setattr(fused_cpu, "task_arithmetic_into", lambda *a: False)  # force the torch path
    plain = _merge_in_blocks(info, base, tensors, torch.bfloat16, kwargs)
    assert torch.equal(_bits(fused), _bits(plain))


@needs_kernel
def test_mixed_dtypes_and_unsupported_ones():
    base, tensors = _family(5000, torch.bfloat16, 2, seed=2)
    mixed = [tensors[0].float(), tensors[1]]  # a float32 checkpoint over a bf16 base
    want = task_arithmetic(base.float(), [t.float() for t in mixed], weight=[1.0, 1.0]).to(torch.bfloat16)
    got = torch.empty(5000, dtype=torch.bfloat16)
    assert fused_cpu.task_arithmetic_into(got, base, mixed, [1.0, 1.0], 1.0)
    assert torch.equal(_bits(got), _bits(want))
    half = torch.empty(5000, dtype=torch.float16)
    assert not fused_cpu.task_arithmetic_into(half, base.half(), [t.half() for t in tensors], [1.0, 1.0], 1.0)


@needs_kernel
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 2])
def test_a_non_finite_input_is_flagged_and_named_by_the_driver(bad, where):
    base, tensors = _family(9000, torch.bfloat16, 2, seed=3)
    [base, *tensors][where].view(-1)[8999] = bad
    assert not fused_cpu.task_arithmetic_into(torch.empty(9000, dtype=torch.bfloat16), base, tensors, [0.0, 1.0], 1.0)
    info = get_method("task_arithmetic")
    kwargs = info.call_kwargs(info.resolve_params({}, n_models=2))
    with pytest.raises(MergeInputError, match=["base", "ckpt-0", "ckpt-1"][where]):
        _merge_in_blocks(info, base, tensors, torch.bfloat16, kwargs, "w", ["base", "ckpt-0", "ckpt-1"])


@needs_kernel
def test_an_overflow_of_finite_inputs_is_the_torch_result():
    base = torch.tensor([-3.0e38, 1.0], dtype=torch.float32)
    tensors = [torch.tensor([3.0e38, 1.0]), torch.tensor([3.0e38, 2.0])]
    info = get_method("task_arithmetic")
    kwargs = info.call_kwargs(info.resolve_params({}, n_models=2))
    got = _merge_in_blocks(info, base, tensors, torch.float32, kwargs)
    want = task_arithmetic(base, tensors, weight=[1.0, 1.0])
    assert torch.equal(_bits(got), _bits(want))


def _through_driver(tmp_path, method: str, params: dict, dtype: torch.dtype, kernel: bool, monkeypatch) -> dict:
    """Every merged tensor of a small bf16/fp32 family, with the method's stored kernel or without it."""
    from safetensors.torch import save_file

    from study.merge import iter_merge, open_inputs

    info = get_method(method)
    if not kernel:
        monkeypatch.delattr(info.fn, "stored_kernel")
    g = torch.Generator().manual_seed(4)
    shapes = {"model.embed_tokens.weight": (300, 64), "model.layers.0.mlp.up_proj.weight": (128, 64),
              "model.norm.weight": (64,), "model.layers.0.self_attn.q_proj.weight": (5, 7)}
    base = {n: (torch.randn(s, generator=g) * 0.05).to(dtype) for n, s in shapes.items()}
    dirs = []
    for i in range(3):
        d = tmp_path / f"m{i}"
        d.mkdir(exist_ok=True)
        sd = {n: (t.float() + torch.randn(t.shape, generator=g) * 0.004).to(dtype) for n, t in base.items()}
        sd["model.norm.weight"][:8] = base["model.norm.weight"][:8]  # equal magnitudes (zeros) at a trim
        save_file(sd, str(d / "model.safetensors"))
        dirs.append(d)
    (tmp_path / "base").mkdir(exist_ok=True)
    save_file(base, str(tmp_path / "base" / "model.safetensors"))
    params = info.resolve_params(params, n_models=3)
    out = {n: t.clone() for n, t in iter_merge(open_inputs(tmp_path / "base", dirs), info, params)}
    if not kernel:
        monkeypatch.undo()
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("method,params", [
    ("ties", {"density": 0.2, "lambda": 0.7}), ("ties", {"density": 0.5, "normalize": False, "weight": [1.0, 0.5, 2.0]}),
    ("ties", {"density": 0.3, "trim_scope": "global"}), ("model_stock", {}), ("task_arithmetic", {"lambda": 0.5}),
])
def test_stored_kernels_equal_the_float32_path_bit_for_bit(tmp_path, monkeypatch, dtype, method, params):
    with_kernel = _through_driver(tmp_path, method, params, dtype, True, monkeypatch)
    without = _through_driver(tmp_path, method, params, dtype, False, monkeypatch)
    assert with_kernel.keys() == without.keys()
    for name in without:
        assert with_kernel[name].dtype == without[name].dtype == dtype
        assert torch.equal(_bits(with_kernel[name]), _bits(without[name])), name


def test_model_stock_ratio_with_norms_computed_once_is_the_pairwise_formula():
    from study.methods.model_stock import stock_ratio

    g = torch.Generator().manual_seed(5)
    base = torch.randn(4000, generator=g)
    tensors = [base + torch.randn(4000, generator=g) * 0.01 + i * 0.001 for i in range(5)]
    deltas = [(t - base).flatten() for t in tensors]
    cosines = []
    for i, a in enumerate(deltas):
        for b in deltas[i + 1:]:
            norm = (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)).clamp(min=1e-6)
            cosines.append((torch.dot(a, b) / norm).clamp(-1, 1))
    cos = torch.stack(cosines).mean()
    assert stock_ratio(base, tensors) == float(5 * cos / (1 + 4 * cos))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_kernels_self_test_reference_is_task_arithmetic_bit_for_bit(seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(5003, generator=g)
    models = [base + torch.randn(5003, generator=g) * 0.01 for _ in range(3)]
    for weights, lam in [([1.0, 1.0, 1.0], 1.0), ([0.3, -0.7, 1.1], 1 / 3)]:
        want = task_arithmetic(base, models, weight=weights, lambda_=lam)
        assert torch.equal(fused_cpu.torch_reference(base, models, weights, lam).view(torch.int32),
                           want.view(torch.int32))
