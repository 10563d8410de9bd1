"""What the paper's full design would cost on H100s: exact cell counts times per-cell costs, per backend.

The cell counts are exact: each ``sweeps/paper/*.yaml`` is expanded by the planner itself (checkpoint
identities replaced by their names, which changes keys but not how many cells there are; cells a method does
not apply to are left out). The per-cell costs are a model with named inputs (``INPUTS``), each printed with
its value, where it came from, and whether it is **assumed** — not measured on a GPU by this project:

- merge: the I/O floor (read k + 1 checkpoints, write one) at ``disk_gbps``, times the native merge's ratio to
  that floor (``merge_vs_floor``, measured on a CPU by ``bench/merge_bench.py``); SVD methods add
  ``svd_s_per_matrix`` per task vector per projection matrix (tsv_merge, iso_cts, subspace_boosting do one SVD
  per task vector; iso_c one per tensor). ``--gpu-check`` takes that SVD time from a ``bench/gpu_check.py``
  run on a GPU, which makes it measured;
- evaluation: prompt tokens at ``prefill_tok_s`` and generated tokens at ``decode_tok_s`` (vLLM), the HF
  backend ``hf_slowdown`` times slower. The tokens per cell come from the sweep's own ``evaluation.tasks``
  (``sweep_workload``): each lm-eval group or tag is expanded to its leaf tasks with lm-eval's TaskManager index
  (offline: the task YAMLs installed with lm-eval, no dataset is read), each leaf scores ``min(limit, its size)``
  documents — sizes are not read offline, so ``limit`` (flagged ASSUMED) — and its YAML's ``output_type`` says
  what a document costs: a multiple-choice document one loglikelihood request per choice (the YAML's literal
  choice list, else ``choices_per_doc``), ``tokens_per_request`` prompt tokens each; a generation document
  ``gen_prompt_tokens_per_doc`` + ``gen_tokens_per_doc``;
- vLLM, fresh engine per cell (the old way): write the merged model (``disk_gbps``) and start an engine
  (``vllm_start_s``) every cell, then score;
- vLLM, resident engine (what the code does now, issue 17): the fresh-engine cell divided by the resident
  speed-up ``bench/vllm_bench.py`` measured (``resident_ratio``: SmolLM2 4.2x by default, the zoo's 35.4x with
  ``--resident-ratio-model zoo``) — but never below what residency cannot remove: scoring plus copying the
  merged weights into the engine (``swap_gbps``). That ratio was measured on a 2-core CPU at 10 documents
  per task; at full evaluation on a GPU, scoring is most of a cell, so the floor usually binds (the table
  says in how many cells). One engine start per sweep is added;
- HF backend: weights copied into a resident model (``hf_load_s``), then scoring.

Cells run one after another on one GPU; merges are counted as GPU time (the GPU is held while they run).

    python bench/cost_model.py                               # the four paper sweeps, default inputs
    python bench/cost_model.py --prefill-tok-s 20000         # any input can be replaced (then: command line)
    python bench/cost_model.py --gpu-check gpu_check.json    # SVD time measured by bench/gpu_check.py
    python bench/cost_model.py --json                        # one JSON line: inputs, rows, totals, flags
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
SVD_SHAPE = "4096x14336"
"""The matrix whose SVD time ``--gpu-check`` reads (Llama-3.1-8B's down_proj; bench/gpu_check.py's default)."""


@dataclass(frozen=True)
class Input:
    """One input of the model: its value, what it is, where the number came from, and whether it is assumed
    (not measured on a GPU by this project). A CPU measurement carried over to a GPU counts as assumed."""

    value: float
    help: str
    source: str
    assumed: bool = True


VLLM_BENCH = "bench/vllm_bench.py, bench/RESULTS.md 'vLLM backend' (2026-12-02, 2-core CPU, 9 zoo tasks x 10 docs)"
RESIDENT_RATIOS = {
    "smollm2": Input(4.2, "resident-engine speed-up per cell", f"measured on a CPU, SmolLM2-135M: {VLLM_BENCH}"),
    "zoo": Input(35.35, "resident-engine speed-up per cell", f"measured on a CPU, mini zoo (0.6M params): {VLLM_BENCH}"),
}
"""``resident_speedup`` of bench/vllm_bench.py (fresh engine per cell / resident engine per cell), by model."""

INPUTS: dict[str, Input] = {
    "disk_gbps": Input(2.0, "local NVMe read/write, GB/s", "assumption (typical NVMe)"),
    "merge_vs_floor": Input(2.9, "native merge time / I/O floor",
                            "measured on a CPU: bench/merge_bench.py, SmolLM2 task_arithmetic, 2.3-2.9x at k = 2-8 "
                            "(bench/RESULTS.md); not measured on a GPU host"),
    "svd_s_per_matrix": Input(0.5, f"one thin SVD of a {SVD_SHAPE}-class matrix on the GPU, s",
                              "assumption (no GPU run yet; bench/gpu_check.py measures it)"),
    "vllm_start_s": Input(60.0, "fresh vLLM engine: load + profile + CUDA graphs, s",
                          "assumption (on a 2-core CPU an in-process engine starts in 10-13 s, bench/RESULTS.md)"),
    "swap_gbps": Input(10.0, "merged weights copied into the resident engine, GB/s",
                       "assumption (host-to-GPU copy; on a CPU a swap took 40-80 ms for the zoo, environment.md)"),
    "resident_ratio": RESIDENT_RATIOS["smollm2"],
    "hf_load_s": Input(10.0, "copy merged weights into the resident HF model, s", "assumption"),
    "choices_per_doc": Input(4.0, "answer choices per multiple-choice document, where the task YAML gives no "
                              "literal list", "assumption (the choices come from each document's data)"),
    "tokens_per_request": Input(150.0, "prompt tokens per loglikelihood request (context + one choice)",
                                "assumption (~150 tokens; few-shot contexts make some tasks longer)"),
    "gen_prompt_tokens_per_doc": Input(900.0, "prompt tokens per generation document",
                                       "assumption (5-shot, ~900 tokens, as gsm8k)"),
    "gen_tokens_per_doc": Input(256.0, "generated tokens per generation document", "assumption (max_gen_toks 256)"),
    "prefill_tok_s": Input(10000.0, "vLLM prompt tokens/s with prompt logprobs, 8B bf16", "assumption"),
    "decode_tok_s": Input(2500.0, "vLLM batched decode tokens/s, 8B bf16", "assumption"),
    "hf_slowdown": Input(4.0, "HF backend evaluation time / vLLM's", "assumption"),
}

_MERGE = ["disk_gbps", "merge_vs_floor", "svd_s_per_matrix"]
_EVAL = ["choices_per_doc", "tokens_per_request", "gen_prompt_tokens_per_doc", "gen_tokens_per_doc",
         "prefill_tok_s", "decode_tok_s"]
COLUMN_INPUTS = {
    "merge_h": _MERGE,
    "vllm_resident_h": [*_MERGE, *_EVAL, "vllm_start_s", "resident_ratio", "swap_gbps"],
    "vllm_fresh_h": [*_MERGE, *_EVAL, "vllm_start_s"],
    "hf_h": [*_MERGE, *_EVAL, "hf_slowdown", "hf_load_s"],
}
"""Which inputs each GPU-hour column rests on (the printed 'assumed' list per column comes from this)."""


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


DOCS_FLAG = "docs per leaf = limit (ASSUMED: dataset sizes not read offline)"
LOGLIKELIHOOD_TYPES = {"loglikelihood", "loglikelihood_rolling"}
DEFAULT_OUTPUT_TYPE = "generate_until"
"""lm-eval's ``TaskConfig.output_type`` default: a task YAML that names none generates."""


@dataclass(frozen=True)
class Leaf:
    """One leaf task of a benchmark, as its lm-eval YAML describes it: what a document costs to score.
    ``choices`` is None where the YAML has no literal choice list (then ``choices_per_doc`` is assumed)."""

    name: str
    benchmark: str
    output_type: str
    docs: int
    choices: int | None


@dataclass(frozen=True)
class Workload:
    """What one cell scores: the leaves of the sweep's tasks, with the requests and tokens they make."""

    leaves: tuple[Leaf, ...]
    mc_requests: float
    mc_tokens: float
    gen_docs: int
    gen_prompt_tokens: float
    gen_tokens: float
    uses: frozenset[str]
    """The inputs the counts rest on (``choices_per_doc`` only if some leaf needs it, the generation inputs
    only if some leaf generates)."""
    flags: tuple[str, ...]


def task_index() -> dict[str, Any]:
    """lm-eval's own index of its installed task YAMLs (name -> entry), built once per process (~15 s)."""
    from study.evaluate import _task_index

    return _task_index()


def _kind(entry: Any) -> str:
    return getattr(getattr(entry, "kind", None), "name", "")


def _entry_cfg(entry: Any) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    return entry.cfg or (load_yaml(entry.yaml_path, resolve_func=False) if entry.yaml_path else {})


def leaf_configs(name: str, index: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(leaf name, task config) of every task under ``name``, in lm-eval's order: a group's members
    recursively (by name, or written inline), a tag's tasks (the index keeps them in the tag entry's ``tags``),
    a task itself. Nothing is downloaded: only the index's YAML configs are read."""
    entry = index.get(name)
    if entry is None:
        raise SystemExit(f"evaluation.tasks: {name!r} is not in lm-eval's task index (the cost model expands "
                         f"lm-eval task, group and tag names only)")
    kind = _kind(entry)
    if kind == "TAG":
        return [leaf for member in sorted(entry.tags) for leaf in leaf_configs(member, index)]
    cfg = _entry_cfg(entry)
    if kind != "GROUP":
        return [(name, cfg)]
    members = cfg.get("task") or []
    out: list[tuple[str, dict[str, Any]]] = []
    for member in members if isinstance(members, list) else [members]:
        if isinstance(member, str):
            out += leaf_configs(member, index)
        elif "group" in member:
            raise SystemExit(f"evaluation.tasks: group {name!r} has an inline subgroup; the cost model does not "
                             f"expand those")
        elif member["task"] in index and len(member) == 1:
            out += leaf_configs(member["task"], index)
        else:
            out.append((member["task"], {**(_entry_cfg(index[member["task"]]) if member["task"] in index else {}),
                                         **member}))
    return out


def literal_choices(doc_to_choice: Any) -> int | None:
    """The number of answer choices when the YAML states them for every document: a list, or a Jinja list
    literal of fields (``{{[sol1, sol2]}}``). A template over the document's data or a function: None."""
    if isinstance(doc_to_choice, list):
        return len(doc_to_choice)
    if isinstance(doc_to_choice, str):
        inner = doc_to_choice.strip()
        if inner.startswith("{{") and inner.endswith("}}"):
            inner = inner[2:-2].strip()
            if inner.startswith("[") and inner.endswith("]") and not any(c in inner[1:-1] for c in "[]()|"):
                return len([x for x in inner[1:-1].split(",") if x.strip()])
    return None


def workload(tasks: list[str], limit: int | None, index: dict[str, Any], v: dict[str, float]) -> Workload:
    """The requests and tokens one cell scores for ``tasks`` at ``limit`` documents per leaf task.

    Documents per leaf are ``min(limit, size)``; the sizes would need the datasets, which this does not read,
    so each leaf counts ``limit`` (an upper bound, flagged ``DOCS_FLAG``)."""
    if limit is None:
        raise SystemExit("evaluation.limit is null: documents per leaf would be the dataset sizes, which the cost "
                         "model does not read offline; give a limit")
    leaves = []
    for name in tasks:
        for leaf, cfg in leaf_configs(name, index):
            output_type = cfg.get("output_type", DEFAULT_OUTPUT_TYPE)
            choices = literal_choices(cfg.get("doc_to_choice")) if output_type == "multiple_choice" else None
            leaves.append(Leaf(leaf, name, output_type, int(limit), choices))
    mc = [x for x in leaves if x.output_type == "multiple_choice"]
    requests = sum(x.docs * (x.choices or v["choices_per_doc"]) for x in mc)
    requests += sum(x.docs for x in leaves if x.output_type in LOGLIKELIHOOD_TYPES)
    gen_docs = sum(x.docs for x in leaves if x.output_type == "generate_until")
    uses = {"tokens_per_request"} | ({"choices_per_doc"} if any(x.choices is None for x in mc) else set())
    if gen_docs:
        uses |= {"gen_prompt_tokens_per_doc", "gen_tokens_per_doc"}
    return Workload(tuple(leaves), requests, requests * v["tokens_per_request"], gen_docs,
                    gen_docs * v["gen_prompt_tokens_per_doc"], gen_docs * v["gen_tokens_per_doc"],
                    frozenset(uses), (DOCS_FLAG,))


def sweep_workload(sweep_path: Path, index: dict[str, Any], v: dict[str, float]) -> Workload:
    from study.config import load_sweep

    spec = load_sweep(sweep_path).evaluation
    return workload(list(spec.tasks), spec.limit, index, v)


def workload_summary(w: Workload) -> dict[str, Any]:
    """The JSON/printed form of a workload: leaves per benchmark, documents, requests, tokens, what is assumed."""
    per_bench = Counter(x.benchmark for x in w.leaves)
    expanded = {x.benchmark for x in w.leaves if x.name != x.benchmark}
    assumed = [x.name for x in w.leaves if x.output_type == "multiple_choice" and x.choices is None]
    return {"benchmarks": len(per_bench), "leaves": len(w.leaves),
            "groups": {b: n for b, n in per_bench.items() if b in expanded},
            "output_types": dict(Counter(x.output_type for x in w.leaves)),
            "docs": sum(x.docs for x in w.leaves), "mc_requests": w.mc_requests, "mc_tokens": w.mc_tokens,
            "gen_docs": w.gen_docs, "gen_prompt_tokens": w.gen_prompt_tokens, "gen_tokens": w.gen_tokens,
            "choices_from_yaml_leaves": sum(x.choices is not None for x in w.leaves),
            "choices_assumed_leaves": assumed, "uses": sorted(w.uses), "flags": list(w.flags)}


def resident_seconds(fresh_s: float, floor_s: float, ratio: float) -> tuple[float, bool]:
    """Per-cell time with a resident engine: the fresh-engine cell / the measured speed-up, but not below
    ``floor_s`` (scoring + weight swap, which residency cannot remove). Returns (seconds, floor binds)."""
    scaled = fresh_s / ratio
    return (floor_s, True) if scaled < floor_s else (scaled, False)


def cell_seconds(method: str, k: int, params: float, matrices: int, v: dict[str, float]) -> dict[str, Any]:
    """Seconds of one cell by part and backend, from input values ``v`` (``INPUTS`` names)."""
    model_gb = params * 2 / 1e9  # bf16
    out: dict[str, Any] = {"merge": 0.0}
    if method not in ("base", "single"):
        out["merge"] = (k + 2) * model_gb / v["disk_gbps"] * v["merge_vs_floor"]
        if method in SVD_PER_TASK_VECTOR:
            out["merge"] += k * matrices * v["svd_s_per_matrix"]
        elif method in SVD_PER_TENSOR:
            out["merge"] += matrices * v["svd_s_per_matrix"]
    scale = params / 8e9
    prefill = (v["mc_tokens"] + v["gen_prompt_tokens"]) / (v["prefill_tok_s"] / scale)
    decode = v["gen_tokens"] / (v["decode_tok_s"] / scale)
    out["eval_vllm"] = prefill + decode
    out["eval_hf"] = out["eval_vllm"] * v["hf_slowdown"]
    out["load_vllm_fresh"] = model_gb / v["disk_gbps"] + v["vllm_start_s"]
    out["swap_vllm"] = model_gb / v["swap_gbps"]
    out["vllm_fresh"] = out["load_vllm_fresh"] + out["eval_vllm"]
    out["vllm_resident"], out["resident_floor"] = resident_seconds(
        out["vllm_fresh"], out["eval_vllm"] + out["swap_vllm"], v["resident_ratio"])
    out["load_hf"] = v["hf_load_s"]
    return out


def sweep_row(name: str, model: str, counts: Counter, v: dict[str, float], w: Workload) -> dict[str, Any]:
    """GPU-hours of one sweep on one GPU (cells one after another), each cell scoring workload ``w``."""
    params, matrices = MODELS.get(model, (8e9, 32 * 7))
    v = {**v, "mc_tokens": w.mc_tokens, "gen_prompt_tokens": w.gen_prompt_tokens, "gen_tokens": w.gen_tokens}
    t: Counter = Counter()
    for (method, k), n in counts.items():
        s = cell_seconds(method, k, params, matrices, v)
        t["cells"] += n
        t["merge_h"] += n * s["merge"] / 3600
        t["vllm_resident_h"] += n * (s["merge"] + s["vllm_resident"]) / 3600
        t["vllm_eval_h"] += n * s["eval_vllm"] / 3600
        t["resident_floor_cells"] += n * bool(s["resident_floor"])
        t["vllm_fresh_h"] += n * (s["merge"] + s["vllm_fresh"]) / 3600
        t["vllm_fresh_load_h"] += n * s["load_vllm_fresh"] / 3600
        t["hf_h"] += n * (s["merge"] + s["load_hf"] + s["eval_hf"]) / 3600
    t["vllm_resident_h"] += v["vllm_start_s"] / 3600  # the one engine start of the sweep
    return {"sweep": name, "model": model, **{k: round(x, 1) for k, x in t.items()}}


def inputs_from_gpu_check(path: Path) -> dict[str, Input]:
    """Inputs measured by a ``bench/gpu_check.py`` run on a GPU (its JSON): the SVD time of ``SVD_SHAPE``.

    A degenerate CPU run (``--device cpu``) measures no GPU and is refused.
    """
    data = json.loads(Path(path).read_text())
    if data.get("check") != "gpu_check":
        raise SystemExit(f"--gpu-check {path}: not a bench/gpu_check.py result")
    if data.get("degenerate") or not str(data.get("device", "")).startswith("cuda"):
        raise SystemExit(f"--gpu-check {path}: a CPU run (device {data.get('device')!r}) measures no GPU")
    by_shape = (data.get("svd") or {}).get("raw_svd_s_by_shape") or {}
    shape = SVD_SHAPE if SVD_SHAPE in by_shape else next((s for s in by_shape if sorted(s.split("x")) ==
                                                          sorted(SVD_SHAPE.split("x"))), None)
    if shape is None:
        raise SystemExit(f"--gpu-check {path}: no SVD time of a {SVD_SHAPE} matrix in it (shapes: {sorted(by_shape)})")
    gpu = (data.get("environment") or {}).get("gpu", data["device"])
    return {"svd_s_per_matrix": replace(
        INPUTS["svd_s_per_matrix"], value=float(by_shape[shape]), assumed=False,
        source=f"measured on {gpu} by bench/gpu_check.py (torch.linalg.svd, {shape}, float32): {path}")}


def resolve_inputs(args: argparse.Namespace, given: set[str]) -> dict[str, Input]:
    """The defaults, then --resident-ratio-model, --gpu-check, then values given on the command line."""
    inputs = dict(INPUTS)
    inputs["resident_ratio"] = RESIDENT_RATIOS[args.resident_ratio_model]
    if args.gpu_check:
        inputs.update(inputs_from_gpu_check(Path(args.gpu_check)))
    for name in given:
        inputs[name] = replace(inputs[name], value=getattr(args, name), assumed=True,
                               source="given on the command line (not known to be measured on a GPU)")
    return inputs


def assumed_by_column(inputs: dict[str, Input], unused: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Per column, the assumed inputs it rests on (``unused``: inputs no sweep's workload needed)."""
    return {col: [n for n in names if inputs[n].assumed and n not in unused] for col, names in COLUMN_INPUTS.items()}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, set[str]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweeps", nargs="+", default=sorted(str(p) for p in (REPO / "sweeps" / "paper").glob("*.yaml")))
    for name, inp in INPUTS.items():
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=None,
                        help=f"{inp.help} (default {inp.value:g}: {inp.source})")
    ap.add_argument("--resident-ratio-model", choices=sorted(RESIDENT_RATIOS), default="smollm2",
                    help="whose measured resident-engine speed-up to use (smollm2 4.2x: the larger model, whose "
                         "scoring is a larger share of a cell, as on a GPU; zoo 35.4x)")
    ap.add_argument("--gpu-check", help="a bench/gpu_check.py JSON from a GPU: its measured SVD time replaces the assumed one")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the tables")
    args = ap.parse_args(argv)
    given = {n for n in INPUTS if getattr(args, n) is not None}
    return args, given


def estimate(args: argparse.Namespace, given: set[str], index: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rows and totals for ``args.sweeps``; ``index``: lm-eval's task index (``task_index()`` unless given)."""
    inputs = resolve_inputs(args, given)
    values = {n: i.value for n, i in inputs.items()}
    index = task_index() if index is None else index
    rows, workloads = [], {}
    for path in args.sweeps:
        model, counts = count_cells(Path(path))
        w = sweep_workload(Path(path), index, values)
        workloads[Path(path).stem] = workload_summary(w)
        rows.append(sweep_row(Path(path).stem, model, counts, values, w))
    workload_inputs = {"choices_per_doc", "tokens_per_request", "gen_prompt_tokens_per_doc", "gen_tokens_per_doc"}
    used = set().union(*(set(s["uses"]) for s in workloads.values()))
    unused = frozenset(workload_inputs - used)
    keys = [k for k in rows[0] if k not in ("sweep", "model")] if rows else []
    total = {k: round(sum(r[k] for r in rows), 1) for k in keys}
    return {"bench": "cost_model", "rows": rows, "total": total,
            "workload": workloads,
            "inputs": {n: {"value": i.value, "assumed": i.assumed, "source": i.source, "used": n not in unused}
                       for n, i in inputs.items()},
            "assumed_inputs_by_column": assumed_by_column(inputs, unused)}


def print_tables(result: dict[str, Any]) -> None:
    inputs, cols = result["inputs"], result["assumed_inputs_by_column"]
    used = {n: i for n, i in inputs.items() if i["used"]}
    n_assumed = sum(i["assumed"] for i in used.values())
    print(f"ESTIMATE: exact cell counts x per-cell costs; {n_assumed} of the {len(used)} inputs used are ASSUMED "
          f"(not measured on a GPU by this project); documents per leaf task are ASSUMED = limit.")
    print(f"\n{'input':25} {'value':>10}  {'status':9} source")
    for name, i in inputs.items():
        status = ("ASSUMED" if i["assumed"] else "measured") if i["used"] else "unused"
        print(f"{name:25} {i['value']:>10g}  {status:9} {i['source']}")
    print("\nscoring workload per cell (the sweep's evaluation.tasks, expanded with lm-eval's task index):")
    for sweep, w in result["workload"].items():
        groups = ", ".join(f"{b} {n}" for b, n in w["groups"].items())
        types = ", ".join(f"{t} {n}" for t, n in w["output_types"].items())
        print(f"  {sweep}: {w['benchmarks']} benchmarks -> {w['leaves']} leaf tasks ({groups}); {types}; "
              f"{w['docs']} docs; {w['mc_requests']:.0f} loglikelihood requests ({w['mc_tokens'] / 1e6:.2f}M "
              f"tokens); {w['gen_docs']} generation docs")
        print(f"    choices per doc from the YAML for {w['choices_from_yaml_leaves']} leaves, ASSUMED "
              f"(choices_per_doc) for {len(w['choices_assumed_leaves'])}: {', '.join(w['choices_assumed_leaves'])}")
        for flag in w["flags"]:
            print(f"    {flag}")
    print(f"\n{'sweep':14} {'cells':>6} {'merge h':>8} {'vLLM resident GPU-h':>20} {'(eval':>7} {'floor cells)':>13} "
          f"{'vLLM fresh GPU-h':>17} {'(load)':>7} {'HF GPU-h':>9}")
    for r in result["rows"] + [{"sweep": "total", **result["total"]}]:
        print(f"{r['sweep']:14} {r['cells']:>6.0f} {r['merge_h']:>8.1f} {r['vllm_resident_h']:>20.1f} "
              f"{r['vllm_eval_h']:>7.1f} {r['resident_floor_cells']:>12.0f}) {r['vllm_fresh_h']:>17.1f} "
              f"{r['vllm_fresh_load_h']:>7.1f} {r['hf_h']:>9.1f}")
    t = result["total"]
    print(f"\nresident engine: in {t['resident_floor_cells']:.0f} of {t['cells']:.0f} cells the measured ratio "
          f"({inputs['resident_ratio']['value']:g}x, CPU) would put a cell below its own scoring + weight swap; "
          f"there that floor is used.")
    for col, names in cols.items():
        print(f"{col} rests on ASSUMED inputs: {', '.join(names) if names else 'none'}")


def main(argv: list[str] | None = None) -> None:
    args, given = parse_args(argv)
    result = estimate(args, given)
    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result)


if __name__ == "__main__":
    main()
