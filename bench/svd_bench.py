"""SVD methods against raw ``torch.linalg.svd`` over exactly the matrices they decompose (issue 21, items 3, 5).

For each SVD method (tsv_merge, iso_c, iso_cts, subspace_boosting) over a model's 2-D projection matrices
(float32, loaded before timing, so I/O is not measured):

- one untimed pass with ``torch.linalg.svd`` wrapped records every matrix the method decomposes (the SVD count
  per matrix shape is printed: TSV-M does k + 2 per matrix, Iso-CTS k + 3, Iso-C and boosting 1);
- ``method``: the method over all matrices, one call per tensor as the merge driver makes them;
- ``raw``: ``torch.linalg.svd(full_matrices=False)`` over the recorded matrices, one call each (the same count);
- ``batched``: the same SVDs stacked by shape, one call per shape (what batching could save at most).

The three run interleaved (method, raw, batched, method, raw, ...) for ``--repeats`` rounds, so slow phases of
a shared machine hit all of them; each is reported as median and spread (min-max), with the ratio of medians
and the median of the per-round ratios, and the load average before and after. Ratios, not times, are the
comparable numbers: on a loaded 2-core machine the absolute times move 2x between runs.

Matrices: SmolLM2-135M-Instruct and its LoRA variants from ``tests/smollm2.py``'s cache when they are there
(never built here: that takes minutes per variant), else (or with ``--synthetic``) a stack of SmolLM2-shaped
Llama layers (q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536), each variant the base plus a
random rank-8 delta, rounded through bf16 like a real checkpoint.

    python bench/svd_bench.py                       # k = 2, first 2 layers, 1 thread, 5 rounds
    python bench/svd_bench.py --threads 2 --repeats 3
    python bench/svd_bench.py --synthetic --layers 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
METHODS = ["tsv_merge", "iso_c", "iso_cts", "subspace_boosting"]
SMOLLM2_SHAPES = {
    "self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576), "self_attn.v_proj": (192, 576),
    "self_attn.o_proj": (576, 576), "mlp.gate_proj": (1536, 576), "mlp.up_proj": (1536, 576),
    "mlp.down_proj": (576, 1536),
}

Family = tuple[str, dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]


def layer_names(layers: int) -> list[str]:
    return [f"model.layers.{i}.{p}.weight" for i in range(layers) for p in SMOLLM2_SHAPES]


def smollm2_family(k: int, layers: int) -> Family | None:
    """Base and k cached LoRA variants (float32), or None when the cache lacks them."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import smollm2
    from safetensors import safe_open

    root = smollm2.cache_dir()
    dirs = [root / "base"] + [root / f"variant-{i}-{s}" for i, s in enumerate(smollm2.SKILLS[:k])]
    if not all((d / "model.safetensors").is_file() for d in dirs):
        return None
    names = layer_names(layers)
    loaded = []
    for d in dirs:
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            loaded.append({n: f.get_tensor(n).float() for n in names})
    return f"SmolLM2-135M-Instruct + {k} LoRA variants ({root})", loaded[0], loaded[1:]


def synthetic_family(k: int, layers: int) -> Family:
    """SmolLM2-shaped layers: base N(0, 0.05), variant i = base + rank-8 delta, both rounded through bf16."""
    g = torch.Generator().manual_seed(0)
    base: dict[str, torch.Tensor] = {}
    variants: list[dict[str, torch.Tensor]] = [{} for _ in range(k)]
    for name in layer_names(layers):
        shape = SMOLLM2_SHAPES[name.split(".", 3)[3].rsplit(".", 1)[0]]
        b = torch.randn(shape, generator=g) * 0.05
        base[name] = b.bfloat16().float()
        for v in variants:
            a, c = torch.randn(shape[0], 8, generator=g) * 0.02, torch.randn(8, shape[1], generator=g) * 0.02
            v[name] = (b + a @ c).bfloat16().float()
    return f"synthetic SmolLM2-shaped layers, {k} rank-8 variants (bf16-rounded)", base, variants


def method_call(method: str, k: int) -> Callable[[torch.Tensor, list[torch.Tensor], str], torch.Tensor]:
    from study.methods.registry import get_method

    info = get_method(method)
    kwargs = info.call_kwargs(info.resolve_params({}, k))
    return lambda base, tensors, name: info.fn(base, tensors, **kwargs, tensor_name=name)


def record_svds(run: Callable[[], Any]) -> list[torch.Tensor]:
    """Every matrix ``run`` hands to ``torch.linalg.svd`` (copies, in call order)."""
    real, seen = torch.linalg.svd, []

    def recording(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(x.detach().clone())
        return real(x, *args, **kwargs)

    torch.linalg.svd = recording
    try:
        run()
    finally:
        torch.linalg.svd = real
    return seen


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def bench_method(method: str, base: dict, variants: list[dict], repeats: int) -> dict[str, Any]:
    call = method_call(method, len(variants))
    names = list(base)
    inputs = [(base[n], [v[n] for v in variants], n) for n in names]

    def run_method() -> None:
        for b, ts, n in inputs:
            call(b, ts, n)

    recorded = record_svds(run_method)
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
    for m in recorded:
        by_shape[tuple(m.shape)].append(m)
    stacks = [torch.stack(ms) for ms in by_shape.values()]
    per_input_shape = Counter(tuple(base[n].shape) for n in names)
    arms: dict[str, Callable[[], Any]] = {
        "method": run_method,
        "raw": lambda: [torch.linalg.svd(m, full_matrices=False) for m in recorded],
        "batched": lambda: [torch.linalg.svd(s, full_matrices=False) for s in stacks],
    }
    times: dict[str, list[float]] = {a: [] for a in arms}
    for _ in range(repeats):
        for arm, fn in arms.items():
            times[arm].append(timed(fn))
    out: dict[str, Any] = {
        "method": method,
        "matrices": len(names),
        "svds": len(recorded),
        "svd_shapes": {f"{s[0]}x{s[1]}": len(ms) for s, ms in by_shape.items()},
        "svd_dtypes": sorted({str(m.dtype).removeprefix("torch.") for m in recorded}),  # float64 would be an accident
        "input_shapes": {f"{s[0]}x{s[1]}": c for s, c in per_input_shape.items()},
        **{arm: summary(ts) for arm, ts in times.items()},
    }
    for arm in ("raw", "batched"):
        out[f"{arm}_ratio"] = out["method"]["median_s"] / out[arm]["median_s"]
        out[f"{arm}_ratio_rounds"] = statistics.median(m / r for m, r in zip(times["method"], times[arm]))
    out["batched_vs_raw"] = out["batched"]["median_s"] / out["raw"]["median_s"]
    return out


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=2, help="number of fine-tuned variants merged")
    ap.add_argument("--layers", type=int, default=2, help="Llama layers (7 projection matrices each)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds of method / raw / batched")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every arm")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of SVD methods")
    ap.add_argument("--synthetic", action="store_true", help="synthetic layers even when SmolLM2 is cached")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    family = None if args.synthetic else smollm2_family(args.k, args.layers)
    label, base, variants = family or synthetic_family(args.k, args.layers)
    load_before = os.getloadavg()
    print(f"# {label}; k = {args.k}, {args.layers} layers, {len(base)} matrices; threads {args.threads}; "
          f"rounds {args.repeats}; CPU {cpu_model()} x{os.cpu_count()}; load before {load_before[0]:.2f}")
    rows = []
    hdr = f"{'method':18s} {'svds':>5s} {'method s (min-max)':>22s} {'raw s (min-max)':>22s} {'ratio':>6s} {'rounds':>6s} {'batched/raw':>11s}"
    print(hdr)
    for method in args.methods.split(","):
        r = bench_method(method, base, variants, args.repeats)
        rows.append(r)
        m, raw = r["method"], r["raw"]
        print(f"{method:18s} {r['svds']:5d} {m['median_s']:8.2f} ({m['min_s']:.2f}-{m['max_s']:.2f})"
              f" {raw['median_s']:9.2f} ({raw['min_s']:.2f}-{raw['max_s']:.2f}) {r['raw_ratio']:6.2f}"
              f" {r['raw_ratio_rounds']:6.2f} {r['batched_vs_raw']:11.2f}   {'/'.join(r['svd_dtypes'])} svds by shape {r['svd_shapes']}", flush=True)
    load_after = os.getloadavg()
    print(f"# load after {load_after[0]:.2f} (1/5/15 min: {', '.join(f'{x:.2f}' for x in load_after)})")
    print(json.dumps({"family": label, "k": args.k, "layers": args.layers, "threads": args.threads,
                      "repeats": args.repeats, "cpu": cpu_model(), "cores": os.cpu_count(),
                      "load_before": load_before, "load_after": load_after, "rows": rows}))


if __name__ == "__main__":
    main()
