"""What the paper's full design would cost on H100s: exact cell counts times per-cell costs, per backend.

The cell counts are exact: each ``sweeps/paper/*.yaml`` is expanded by the planner itself (checkpoint
identities replaced by their names, which changes keys but not how many cells there are; cells a method does
not apply to are left out). The per-cell costs are a model with named inputs, printed with the result:

- merge: the I/O floor (read k + 1 checkpoints, write one) at ``--disk-gbps``, times the native merge's
  measured ratio to that floor (``--merge-vs-floor``, from ``bench/merge_bench.py``); SVD methods add
  ``--svd-s-per-matrix`` per task vector per projection matrix (tsv_merge, iso_cts, subspace_boosting do
  one SVD per task vector; iso_c one per tensor);
- load: writing the merged model to local scratch and starting the backend (``--vllm-start-s`` for a fresh
  vLLM process per model; the hf backend copies weights into a resident model, ``--hf-load-s``);
- evaluation: prompt tokens at ``--prefill-tok-s`` and generated tokens at ``--decode-tok-s`` (vLLM), with the
  hf backend ``--hf-slowdown`` times slower. Token counts per cell are ``--mc-tokens`` (15 multiple-choice
  tasks, limit 500) and ``--gen-prompt-tokens`` + ``--gen-tokens`` (gsm8k).

**No input below was measured on an H100** (no GPU was lent to the sessions that wrote this): the defaults
are order-of-magnitude assumptions stated in bench/RESULTS.md. Re-run with measured values when a GPU run
exists (the store's records carry ``timing.merge_s`` and ``timing.eval_s`` per cell).

    python bench/cost_model.py                       # the four paper sweeps, default assumptions
    python bench/cost_model.py --prefill-tok-s 20000 # any input can be replaced
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Public model cards: parameter count and number of 2-D projection matrices (7 per decoder layer).
MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": (8.03e9, 32 * 7),
    "meta-llama/Llama-3.2-3B-Instruct": (3.21e9, 28 * 7),
    "Qwen/Qwen3-4B": (4.02e9, 36 * 7),
    "Qwen/Qwen3-8B": (8.19e9, 36 * 7),
}
SVD_PER_TASK_VECTOR = {"tsv_merge", "iso_cts", "subspace_boosting"}
SVD_PER_TENSOR = {"iso_c"}


def count_cells(sweep_path: Path) -> tuple[str, Counter]:
    """(base model id, Counter of (kind, k)) for the applicable cells of one sweep."""
    from study.checkpoints import ResolvedModel
    from study.config import load_sweep
    from study.plan import build_plan

    sweep = load_sweep(sweep_path)
    models = {}
    for base in sweep.bases:
        for ref in [base.model, *base.checkpoints]:
            models[ref.label] = ResolvedModel(ref, Path(ref.label), ref.label)
    plan = build_plan(sweep, models)
    counts: Counter = Counter()
    for cell in plan.unique_cells():
        if cell.not_applicable:
            continue
        counts[(cell.method, cell.k)] += 1
    return sweep.bases[0].model.label, counts


def cell_seconds(method: str, k: int, params: float, matrices: int, a: argparse.Namespace) -> dict[str, float]:
    model_gb = params * 2 / 1e9  # bf16
    out = {"merge": 0.0, "load": 0.0, "eval_vllm": 0.0, "eval_hf": 0.0}
    if method not in ("base", "single"):
        out["merge"] = (k + 2) * model_gb / a.disk_gbps * a.merge_vs_floor
        if method in SVD_PER_TASK_VECTOR:
            out["merge"] += k * matrices * a.svd_s_per_matrix
        elif method in SVD_PER_TENSOR:
            out["merge"] += matrices * a.svd_s_per_matrix
    out["load_vllm"] = model_gb / a.disk_gbps + a.vllm_start_s
    out["load_hf"] = a.hf_load_s
    scale = params / 8e9
    prefill = (a.mc_tokens + a.gen_prompt_tokens) / (a.prefill_tok_s / scale)
    decode = a.gen_tokens / (a.decode_tok_s / scale)
    out["eval_vllm"] = prefill + decode
    out["eval_hf"] = out["eval_vllm"] * a.hf_slowdown
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweeps", nargs="+", default=sorted(str(p) for p in (REPO / "sweeps" / "paper").glob("*.yaml")))
    ap.add_argument("--disk-gbps", type=float, default=2.0, help="local NVMe read/write, GB/s (assumed)")
    ap.add_argument("--merge-vs-floor", type=float, default=1.5, help="native merge / I/O floor (bench/merge_bench.py)")
    ap.add_argument("--svd-s-per-matrix", type=float, default=0.5, help="one thin SVD of a 4096x14336-class matrix on an H100, s (assumed)")
    ap.add_argument("--vllm-start-s", type=float, default=60.0, help="fresh vLLM process: load + profile + CUDA graphs, s (assumed)")
    ap.add_argument("--hf-load-s", type=float, default=10.0, help="copy merged weights into the resident HF model, s (assumed)")
    ap.add_argument("--mc-tokens", type=float, default=15 * 500 * 4 * 150, help="loglikelihood tokens per cell (15 MC tasks x 500 docs x ~4 choices x ~150 tokens)")
    ap.add_argument("--gen-prompt-tokens", type=float, default=500 * 900, help="gsm8k prompt tokens per cell (500 docs, 5-shot)")
    ap.add_argument("--gen-tokens", type=float, default=500 * 256, help="gsm8k generated tokens per cell (max_gen_toks 256)")
    ap.add_argument("--prefill-tok-s", type=float, default=10000.0, help="vLLM prompt tokens/s with prompt logprobs, 8B bf16 (assumed)")
    ap.add_argument("--decode-tok-s", type=float, default=2500.0, help="vLLM batched decode tokens/s, 8B bf16 (assumed)")
    ap.add_argument("--hf-slowdown", type=float, default=4.0, help="HF backend evaluation time / vLLM's (assumed)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    a = ap.parse_args()

    rows = []
    for path in a.sweeps:
        model, counts = count_cells(Path(path))
        params, matrices = MODELS.get(model, (8e9, 32 * 7))
        totals = Counter()
        for (method, k), n in counts.items():
            s = cell_seconds(method, k, params, matrices, a)
            totals["cells"] += n
            totals["merge_h"] += n * s["merge"] / 3600
            totals["vllm_h"] += n * (s["merge"] + s["load_vllm"] + s["eval_vllm"]) / 3600
            totals["hf_h"] += n * (s["merge"] + s["load_hf"] + s["eval_hf"]) / 3600
            totals["vllm_eval_h"] += n * s["eval_vllm"] / 3600
            totals["vllm_load_h"] += n * s["load_vllm"] / 3600
        rows.append({"sweep": Path(path).name, "model": model, **{k: round(v, 1) for k, v in totals.items()}})
    total = {k: round(sum(r[k] for r in rows), 1) for k in ("cells", "merge_h", "vllm_h", "hf_h", "vllm_eval_h", "vllm_load_h")}
    if a.json:
        print(json.dumps({"bench": "cost_model", "rows": rows, "total": total}))
        return
    print("ESTIMATE: exact cell counts x per-cell costs from the assumptions below (none measured on an H100).")
    print({k: v for k, v in vars(a).items() if k not in ("sweeps", "json")})
    print(f"{'sweep':22} {'cells':>6} {'merge h':>8} {'vllm GPU-h':>11} {'(eval':>7} {'load)':>7} {'hf GPU-h':>9}")
    for r in rows + [{"sweep": "total", **total}]:
        print(f"{r['sweep']:22} {r['cells']:>6.0f} {r['merge_h']:>8.1f} {r['vllm_h']:>11.1f} {r['vllm_eval_h']:>7.1f} "
              f"{r['vllm_load_h']:>7.1f} {r['hf_h']:>9.1f}")


if __name__ == "__main__":
    main()
