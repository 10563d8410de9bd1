"""Task arithmetic as one fused CPU pass over the stored (bf16 / float32) inputs, in C compiled on first use.

Why: the block-wise torch path converts every input block to float32, checks it, and runs ~6 passes per model
over the blocks (sub, add, their temporaries); on SmolLM2 that was 2.3-2.9x the I/O floor. Here each entry
is read once from the memory-mapped checkpoints, converted, accumulated and written in the output dtype.

Bit for bit the torch path (``task_arithmetic.task_arithmetic`` on float32 blocks): per entry
``acc = 0; acc = fma(t_i - b, w_i, acc)`` in model order (torch's ``add_(x, alpha=w)`` is a fused multiply-add
on its AVX2/AVX-512 and NEON kernels), then ``acc * λ``, ``+ b`` (two roundings, ``-ffp-contract=off``), and a
round-to-nearest-even cast; weights and λ are rounded to float32 first, as torch does for a Python scalar.
The library is only used after a self-test against the torch path on this machine (odd lengths, signed zeros);
a machine whose torch kernels round differently, or without a C compiler, keeps the torch path.

Finiteness: a NaN or ±Inf in any input makes the float32 result non-finite (NaN and Inf propagate through
subtraction, fma, scaling and the final add, and 0·Inf is NaN), so the kernel flags a tensor whose result has
a non-finite entry and the driver redoes that tensor on the torch path, which names the offending input, or
reproduces an overflow of finite inputs exactly. A clean tensor is checked for free.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CHUNK 2048

static inline void load(const void *src, int dtype, int64_t at, int64_t n, float *dst) {
    if (dtype == 0) {
        memcpy(dst, (const float *)src + at, (size_t)n * sizeof(float));
    } else {
        const uint16_t *h = (const uint16_t *)src + at;
        for (int64_t j = 0; j < n; j++) {
            uint32_t u = (uint32_t)h[j] << 16;
            memcpy(dst + j, &u, 4);
        }
    }
}

/* inputs[0] is the base; dtype 0 = float32, 1 = bfloat16. Returns 1 when a result entry is not finite. */
int task_arithmetic(int64_t begin, int64_t end, int nin, const void *const *inputs, const int *dtypes,
                    const float *weights, float lam, void *out, int out_dtype) {
    float b[CHUNK], x[CHUNK], acc[CHUNK];
    uint32_t bad = 0;
    for (int64_t at = begin; at < end; at += CHUNK) {
        int64_t n = end - at < CHUNK ? end - at : CHUNK;
        load(inputs[0], dtypes[0], at, n, b);
        for (int64_t j = 0; j < n; j++) acc[j] = 0.0f;
        for (int i = 1; i < nin; i++) {
            float w = weights[i - 1];
            load(inputs[i], dtypes[i], at, n, x);
            for (int64_t j = 0; j < n; j++) acc[j] = fmaf(x[j] - b[j], w, acc[j]);
        }
        for (int64_t j = 0; j < n; j++) {
            float v = acc[j] * lam;
            acc[j] = v + b[j];
        }
        for (int64_t j = 0; j < n; j++) {
            uint32_t u;
            memcpy(&u, acc + j, 4);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (out_dtype == 0) {
            memcpy((float *)out + at, acc, (size_t)n * sizeof(float));
        } else {
            uint16_t *o = (uint16_t *)out + at;
            for (int64_t j = 0; j < n; j++) {
                uint32_t u;
                memcpy(&u, acc + j, 4);
                o[j] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
            }
        }
    }
    return bad != 0;
}
"""

FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]
SPLIT = 1 << 18
"""Tensors with at least this many entries are split across torch's intra-op thread count (ctypes releases
the GIL); smaller ones are one call, where a thread hand-off would cost more than it saves."""

_lock = threading.Lock()
_lib: Any = None
_tried = False
_why_not = ""
_pool: ThreadPoolExecutor | None = None


def cache_dir() -> Path:
    root = os.environ.get("MERGE_STUDY_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "merge-study", "kernels")
    return Path(root)


def _machine_key(compiler: str) -> str:
    """Source, flags, compiler and CPU: ``-march=native`` code is only reused on the CPU it was built for.

    The compiler is identified by its resolved path, size and mtime, not ``cc --version``: a subprocess per
    merge process cost up to a second on a loaded machine, inside every merge's time."""
    found = shutil.which(compiler)
    if found is None:
        return ""
    real = os.path.realpath(found)
    stat = os.stat(real)
    cpu = ""
    try:
        cpu = next((line for line in open("/proc/cpuinfo") if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    text = "\n".join([SOURCE, " ".join(FLAGS), real, str(stat.st_size), str(stat.st_mtime_ns), cpu, platform.machine()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build() -> Path | None:
    global _why_not
    compiler = os.environ.get("CC", "cc")
    key = _machine_key(compiler)
    if not key:
        _why_not = f"no C compiler ({compiler})"
        return None
    target = cache_dir() / f"fused_cpu-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "fused_cpu.c"
        src.write_text(SOURCE)
        built = Path(tmp) / target.name
        done = subprocess.run([compiler, *FLAGS, str(src), "-o", str(built), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            _why_not = f"{compiler} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
            return None
        os.replace(built, target)  # atomic: concurrent builders leave one complete file
    return target


def torch_reference(base: Any, tensors: list[Any], weights: list[float], lam: float) -> Any:
    """``study.methods.task_arithmetic`` in float32, the same torch operations in the same order (written out
    here, not imported, so the method module can use this one without an import cycle; tests/test_fused_cpu.py
    checks the two agree bit for bit)."""
    import torch

    acc, task_vector = torch.zeros_like(base), torch.empty_like(base)
    for t, w in zip(tensors, weights):
        acc.add_(torch.sub(t, base, out=task_vector), alpha=float(w))
    return acc.mul_(lam).add_(base)


def _self_test(lib: Any) -> bool:
    """The kernel against the torch path on awkward data: odd lengths, signed zeros, both dtypes, weights."""
    import torch

    g = torch.Generator().manual_seed(0)
    for n, dtype, out_dtype in [(4099, torch.bfloat16, torch.bfloat16), (77, torch.float32, torch.float32),
                                (2048 * 3 + 5, torch.bfloat16, torch.float32)]:
        base = (torch.randn(n, generator=g) * 0.02).to(dtype)
        base[:7] = torch.tensor([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 0.0]).to(dtype)
        models = [(base.float() + torch.randn(n, generator=g) * 0.002).to(dtype) for _ in range(3)]
        models[0][:4] = torch.tensor([0.0, -0.0, -0.0, 0.0]).to(dtype)
        for weights, lam in [([1.0, 1.0, 1.0], 1.0), ([0.3, -0.7, 1.1], 1 / 3)]:
            want = torch_reference(base.float(), [m.float() for m in models], weights, lam).to(out_dtype)
            got = torch.empty(n, dtype=out_dtype)
            if _call(lib, got, base, models, weights, lam, 0, n) or not torch.equal(got.view(-1).view(torch.uint8),
                                                                                   want.view(-1).view(torch.uint8)):
                return False
    return True


def _load() -> Any:
    global _lib, _tried, _why_not
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("MERGE_STUDY_FUSED", "1") == "0":
            _why_not = "MERGE_STUDY_FUSED=0"
            return None
        try:
            path = _build()
            if path is None:
                return None
            lib = ctypes.CDLL(str(path))
            lib.task_arithmetic.restype = ctypes.c_int
            lib.task_arithmetic.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p,
                                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p,
                                            ctypes.c_int]
        except OSError as exc:
            _why_not = f"cannot load the kernel: {exc}"
            return None
        if not _self_test(lib):
            _why_not = "self-test against the torch path failed (this machine's torch rounds differently)"
            return None
        _lib = lib
        return lib


def available() -> bool:
    """True when the fused kernel is built, loaded and agrees with the torch path on this machine."""
    return _load() is not None


def why_not() -> str:
    """Why ``available()`` is False (empty when it is True or was not asked)."""
    return _why_not


DTYPES = {"float32": 0, "bfloat16": 1}


def _code(tensor: Any) -> int | None:
    return DTYPES.get(str(tensor.dtype).removeprefix("torch."))


def _call(lib: Any, out: Any, base: Any, tensors: list[Any], weights: list[float], lam: float,
          begin: int, end: int) -> int:
    n_in = 1 + len(tensors)
    inputs = [base, *tensors]
    ptrs = (ctypes.c_void_p * n_in)(*[t.data_ptr() for t in inputs])
    codes = (ctypes.c_int * n_in)(*[_code(t) for t in inputs])
    w = (ctypes.c_float * max(1, len(weights)))(*weights)
    return lib.task_arithmetic(begin, end, n_in, ptrs, codes, w, ctypes.c_float(lam), out.data_ptr(), _code(out))


def task_arithmetic_into(out: Any, base: Any, tensors: list[Any], weights: list[float], lam: float) -> bool:
    """Write task arithmetic of the stored-dtype ``base`` and ``tensors`` into ``out``; False when the fused
    kernel cannot (not available, a dtype other than float32/bfloat16, non-contiguous) or a result entry is not
    finite: the caller then runs the torch path, whose result and errors are the reference."""
    import torch

    lib = _load()
    every = [out, base, *tensors]
    if lib is None or any(_code(t) is None or not t.is_contiguous() or t.device.type != "cpu" for t in every):
        return False
    if any(t.numel() != out.numel() for t in every):
        return False
    n = out.numel()
    threads = max(1, torch.get_num_threads())
    if n < SPLIT or threads == 1:
        return not _call(lib, out, base, tensors, weights, lam, 0, n)
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="fused-cpu")
    step = -(-n // threads)
    ranges = [(i, min(i + step, n)) for i in range(0, n, step)]
    flags = list(_pool.map(lambda r: _call(lib, out, base, tensors, weights, lam, *r), ranges))
    return not any(flags)
