"""Merge speed and memory: our streaming kernel vs mergekit vs the I/O floor, measured side by side.

For each model family (the mini zoo; SmolLM2-135M variants), k and method, three measurements run each in a
fresh subprocess (so peak RSS is that merge's alone):

- ``native``: ``study.merge.write_merged`` (stream tensors, merge, write a HF directory);
- ``mergekit``: ``mergekit.merge.run_merge`` on the same inputs, same dtype (where mergekit has the method);
  the largest |difference| between the two outputs is reported;
- ``io``: the floor — read every byte of the k + 1 input checkpoints (memory-mapped, as both merges read
  them, and touched by one ``aminmax`` reduction per tensor) and write one model's worth.

The kinds compared run in rounds (native, mergekit[, io for task arithmetic], native, mergekit, ...;
``--repeats`` rounds, default 3), so load from other processes on a shared machine hits them alike. Each
kind reports the median wall time, the fastest and every run, and the largest peak RSS of its runs; ratios
are per round (the runs of one round ran back to back), reported as median [lowest, highest]. The load
average before and after each row is recorded: quote ratios from a loaded machine with it.

Wall time is measured inside the child around the merge call only (imports excluded: mergekit's import is
~6 s and would flatter us). Every child of one family runs with the same number of torch intra-op threads:
one on the mini zoo (as ``merge-study run`` does for models under 50 M parameters, where a second thread only
adds synchronisation), torch's default on SmolLM2; ``--threads`` overrides both. Prints a table, then one
JSON line of ratios (speed = mergekit time / native time; floor = native time / I/O time; rss = native peak /
mergekit peak). No thresholds are asserted here.

    python bench/merge_bench.py --quick         # zoo (5 methods, once) and SmolLM2 (TA, TIES, Model Stock; twice), k = 2
    python bench/merge_bench.py                 # mini zoo and SmolLM2 variants, k = 2, 4, 8
    python bench/merge_bench.py --families smollm2 --methods new --ks 2,4,8   # issue 16's methods vs mergekit
    python bench/merge_bench.py --trim          # TIES' exact top-k trim vs a full stable sort, one tensor
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ["task_arithmetic", "ties", "model_stock", "tsv_merge", "iso_c"]
NEW_METHODS = ["della", "della_linear", "breadcrumbs_ties", "sce", "nuslerp", "karcher", "multislerp"]
"""Methods added with issue 16 and measured against mergekit (``--methods new``); nuslerp merges exactly two."""
MERGEKIT = {"task_arithmetic": ({"lambda": 1.0, "normalize": False}, {"weight": 1.0}),
            "ties": ({"lambda": 1.0, "normalize": True}, {"weight": 1.0, "density": 0.2}),
            "model_stock": ({}, {}),
            # rescale: true is mergekit's L1-norm matching = native rescale "l1" (study/methods/della.py's note)
            "della": ({"lambda": 1.0, "normalize": True, "rescale": True},
                      {"weight": 1.0, "density": 0.7, "epsilon": 0.15}),
            "della_linear": ({"lambda": 1.0, "normalize": False, "rescale": True},
                             {"weight": 1.0, "density": 0.7, "epsilon": 0.15}),
            "breadcrumbs_ties": ({"lambda": 1.0, "normalize": False, "rescale": False},
                                 {"weight": 1.0, "density": 0.9, "gamma": 0.01}),
            "sce": ({"select_topk": 1.0}, {}),
            "nuslerp": ({"nuslerp_flatten": True, "nuslerp_row_wise": False}, {"weight": 1.0}),
            "multislerp": ({"normalize_weights": True, "eps": 1e-8}, {"weight": 1.0}),
            "karcher": ({"max_iter": 10, "tol": 1e-5}, {})}
"""mergekit's (global, per-model) parameters, each the same merge as the native method with ``NATIVE_PARAMS``."""
NATIVE_PARAMS = {"task_arithmetic": {"lambda": 1.0}, "ties": {"density": 0.2, "lambda": 1.0},
                 "della": {"density": 0.7, "epsilon": 0.15, "rescale": "l1", "normalize": True, "lambda": 1.0},
                 "della_linear": {"density": 0.7, "epsilon": 0.15, "rescale": "l1", "lambda": 1.0},
                 "breadcrumbs_ties": {"density": 0.9, "gamma": 0.01, "normalize": False, "lambda": 1.0},
                 "sce": {"select_topk": 1.0, "lambda": 1.0},
                 "nuslerp": {"nuslerp_flatten": True, "nuslerp_row_wise": False, "use_base": True},
                 "multislerp": {"normalize_weights": True, "eps": 1e-8, "use_base": True},
                 "karcher": {"max_iter": 10, "tol": 1e-5}}
NO_BASE = {"karcher"}
"""mergekit adds a configured base_model to karcher's inputs (k + 1 models); native karcher averages the k."""
K_MAX = {"nuslerp": 2}


def peak_rss_mb() -> float:
    from peak_memory import peak_rss_mib  # bench/ is on sys.path when a script here runs

    return peak_rss_mib()


def child_native(method: str, base: str, models: list[str], out: str) -> dict:
    from study.merge import open_inputs, write_merged
    from study.methods.registry import get_method

    info = get_method(method)
    params = info.resolve_params(NATIVE_PARAMS.get(method, {}), n_models=len(models))
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    write_merged(open_inputs(Path(base), [Path(m) for m in models]), info, params, Path(out))
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss0}


def child_mergekit(method: str, base: str, models: list[str], out: str) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    from study.tensors import SafetensorsSource

    src = SafetensorsSource(Path(base))
    dtype = src.dtype(src.names()[0])
    glob, per_model = MERGEKIT[method]
    cfg = MergeConfiguration.model_validate({
        "merge_method": method, **({} if method in NO_BASE else {"base_model": base}), "dtype": dtype,
        "parameters": glob, "models": [{"model": m, **({"parameters": per_model} if per_model else {})} for m in models],
    })
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    run_merge(cfg, out, MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=0))
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss0}


def child_io(method: str, base: str, models: list[str], out: str) -> dict:
    """Read every byte of the k + 1 inputs one tensor name at a time, write the base's worth: the floor.

    ``get`` only maps a tensor (safetensors is zero-copy); a reduction over it makes the bytes actually come
    in, as they must for any merge.
    """
    import torch
    from safetensors.torch import save_file

    from study.tensors import SafetensorsSource

    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    sources = [SafetensorsSource(Path(p)) for p in [base, *models]]
    result = {}
    for name in sources[0].names():
        tensors = [s.get(name) for s in sources]
        for t in tensors:
            if t.numel():
                torch.aminmax(t) if t.is_floating_point() else t.max()
        result[name] = tensors[0]
    Path(out).mkdir(parents=True, exist_ok=True)
    save_file(result, str(Path(out) / "model.safetensors"))
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss0}


CHILDREN = {"native": child_native, "mergekit": child_mergekit, "io": child_io}


def measure(kind: str, method: str, base: Path, models: list[Path], threads: int, repeats: int) -> dict:
    """``repeats`` fresh-process runs of one kind (``summary``)."""
    return summary([measure_once(kind, method, base, models, threads) for _ in range(repeats)])


def summary(runs: list[dict]) -> dict:
    """``wall_s`` is the median of the successful runs (``best_s`` the fastest, ``walls_s`` all, in order), with
    the largest peak RSS among them."""
    import statistics

    ok = [r for r in runs if "wall_s" in r]
    if not ok:
        return runs[0]
    walls = [r["wall_s"] for r in ok]
    return {"wall_s": statistics.median(walls), "best_s": min(walls), "walls_s": [round(w, 3) for w in walls],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok)}


def measure_rounds(kinds: list[str], method: str, base: Path, models: list[Path], threads: int,
                   repeats: int) -> tuple[dict[str, dict], float | None, list[dict[str, float]]]:
    """The kinds run in rounds (native, mergekit, io, native, mergekit, io, ...), so that a change in the
    machine's load hits all of them alike: each kind's ``summary``, the largest |difference| between native's
    and mergekit's outputs (last round; None when either failed or is not measured), and each round's walls."""
    keep = Path(tempfile.mkdtemp(prefix="bench-pair-"))
    try:
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for _ in range(repeats):
            for kind in kinds:
                shutil.rmtree(keep / kind, ignore_errors=True)
                runs[kind].append(measure_once(kind, "io" if kind == "io" else method, base, models, threads,
                                               keep=keep / kind))
        rounds = [{kind: runs[kind][i].get("wall_s", float("nan")) for kind in kinds} for i in range(repeats)]
        diff = None
        if {"native", "mergekit"} <= set(kinds) and all("wall_s" in runs[kind][-1] for kind in ("native", "mergekit")):
            diff = max_abs_diff(keep / "native", keep / "mergekit")
        return {kind: summary(r) for kind, r in runs.items()}, diff, rounds
    finally:
        shutil.rmtree(keep, ignore_errors=True)


def paired(rounds: list[dict[str, float]], num: str, den: str) -> dict | None:
    """Per-round ratio ``num / den`` (runs of one round ran back to back): median, lowest and highest."""
    import math
    import statistics

    values = [r[num] / r[den] for r in rounds if num in r and den in r and not math.isnan(r[num] / r[den])]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "low": round(min(values), 3), "high": round(max(values), 3)}


def max_abs_diff(a: Path, b: Path) -> float:
    """The largest |a - b| over every tensor both merged directories hold (in float32, of the stored values)."""
    from study.tensors import SafetensorsSource

    sa, sb = SafetensorsSource(a), SafetensorsSource(b)
    worst = 0.0
    for name in sorted(set(sa.names()) & set(sb.names())):
        ta, tb = sa.get(name), sb.get(name)
        if ta.is_floating_point() and ta.numel():
            worst = max(worst, float((ta.float() - tb.float()).abs().max()))
    return worst


def measure_once(kind: str, method: str, base: Path, models: list[Path], threads: int, keep: Path | None = None) -> dict:
    """One fresh-process run; its output is deleted unless ``keep`` names where to leave it."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    try:
        target = keep if keep is not None else out / "m"
        cmd = [sys.executable, __file__, "--child", kind, "--method", method, "--base", str(base), "--out", str(target),
               "--threads", str(threads), *[x for m in models for x in ("--model", str(m))]]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def zoo_family() -> tuple[Path, list[Path]]:
    from study.zoo import build_zoo

    zoo = build_zoo(progress=False)
    return zoo.model("base"), [zoo.model(e) for e in zoo.experts]


def smollm2_family(n: int) -> tuple[Path, list[Path]]:
    """SmolLM2-135M (bf16) and ``n`` variants = base + a random rank-8 delta per 2-D tensor.

    Merge cost does not depend on what the deltas mean, so random variants measure the same work as
    fine-tunes, in seconds instead of minutes of training.
    """
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(HERE.parent / "tests"))
    import smollm2  # the same conversion the slow tests use (cached)

    base = smollm2.base_model()
    root = smollm2.cache_dir() / "bench-variants"
    out = []
    for i in range(n):
        d = root / f"v{i}"
        if not (d / "model.safetensors").is_file():
            g = torch.Generator().manual_seed(1000 + i)
            sd = {}
            for f in sorted(base.glob("*.safetensors")):
                sd.update(load_file(f))
            for name, t in sd.items():
                if t.dim() == 2:
                    a = torch.randn(t.shape[0], 8, generator=g) * 0.01
                    b = torch.randn(8, t.shape[1], generator=g) * 0.01
                    sd[name] = (t.float() + a @ b).to(t.dtype)
            d.mkdir(parents=True, exist_ok=True)
            for extra in base.iterdir():
                if extra.suffix != ".safetensors" and extra.is_file():
                    shutil.copy2(extra, d / extra.name)
            save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
        out.append(d)
    return base, out


def run(families: list[str], ks: list[int], methods: dict[str, list[str]], threads: int | None,
        repeats: dict[str, int], no_io: bool = False) -> dict:
    rows = []
    for family in families:
        base, pool = zoo_family() if family == "zoo" else smollm2_family(max(ks))
        n_threads = threads if threads is not None else (1 if family == "zoo" else 0)
        n_repeats = repeats[family]
        for k in ks:
            if k > len(pool):
                continue
            models = pool[:k]
            todo = [m for m in methods[family] if k <= K_MAX.get(m, k)]
            # the floor runs in task arithmetic's rounds when TA is measured, else on its own
            io = measure("io", "io", base, models, n_threads, n_repeats) if todo and not no_io and "task_arithmetic" not in todo else {}
            for method in todo:
                kinds = (["native", "mergekit"] if method in MERGEKIT else ["native"])
                if method == "task_arithmetic" and not no_io:
                    kinds.append("io")
                load0 = os.getloadavg()[0]
                measured, diff, rounds = measure_rounds(kinds, method, base, models, n_threads, n_repeats)
                native, theirs = measured["native"], measured.get("mergekit", {})
                row_io = measured.get("io", io)
                speed, floor = paired(rounds, "mergekit", "native"), paired(rounds, "native", "io")
                rows.append({"family": family, "k": k, "method": method, "threads": n_threads, "native": native,
                             "mergekit": theirs, "io": row_io, "max_abs_diff": diff, "rounds": rounds,
                             "speed_vs_mergekit": speed, "native_vs_io": floor,
                             "load_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]})
                print(f"{family:8} k={k:<2} {method:16} native {native.get('wall_s', float('nan')):7.2f}s "
                      f"{native.get('peak_rss_mb', 0):7.0f}MB | mergekit {theirs.get('wall_s', float('nan')):7.2f}s "
                      f"{theirs.get('peak_rss_mb', 0):7.0f}MB" + (f" | io {row_io['wall_s']:6.2f}s" if "wall_s" in row_io else "")
                      + (f" | speed x{speed['median']} [{speed['low']}, {speed['high']}]" if speed else "")
                      + (f" | /floor x{floor['median']} [{floor['low']}, {floor['high']}]" if floor else "")
                      + (f" | max|diff| {diff:.3g}" if diff is not None else "")
                      + f" | runs {[{k_: round(v, 2) for k_, v in r.items()} for r in rounds]} | load {load0:.1f}->{os.getloadavg()[0]:.1f}"
                      + (f"  [{native.get('error') or theirs.get('error')}]" if native.get("error") or theirs.get("error") else ""),
                      flush=True)
    return {"rows": rows}


def ratios(rows: list[dict]) -> dict:
    """Headline ratios from the largest family and k measured (the most realistic merge in this run)."""
    ok = [r for r in rows if "wall_s" in r["native"]]
    if not ok:
        return {}
    fam = "smollm2" if any(r["family"] == "smollm2" for r in ok) else "zoo"
    kmax = max(r["k"] for r in ok if r["family"] == fam)
    pick = {r["method"]: r for r in ok if r["family"] == fam and r["k"] == kmax}
    out: dict = {"bench": "merge", "family": fam, "k": kmax}
    for short, method in [("ta", "task_arithmetic"), ("ties", "ties"), ("model_stock", "model_stock")]:
        r = pick.get(method)
        if r and "wall_s" in r["mergekit"]:
            out[f"{short}_vs_mergekit_speed"] = (r.get("speed_vs_mergekit") or {}).get(
                "median", round(r["mergekit"]["wall_s"] / r["native"]["wall_s"], 3))
            out[f"{short}_rss_vs_mergekit"] = round(r["native"]["peak_rss_mb"] / r["mergekit"]["peak_rss_mb"], 3)
    if "task_arithmetic" in pick and "wall_s" in pick["task_arithmetic"]["io"]:
        ta = pick["task_arithmetic"]
        out["ta_vs_io_floor"] = (ta.get("native_vs_io") or {}).get("median", round(ta["native"]["wall_s"] / ta["io"]["wall_s"], 3))
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    return out


def trim_bench(repeats: int) -> list[dict]:
    """TIES' trim of one task vector at density 0.2 (``common.keep_top_magnitude``: exact count, ties by index)
    against the same selection by a full stable sort, on SmolLM2's embedding (49152×576) and a 1536×576
    projection, with fine-tune-like task vectors (base ± a few ulps) stored in float32 and in bf16."""
    import torch

    from study.methods.common import keep_top_magnitude

    def stable_sort_keep(delta):
        keep = max(1, int(0.2 * delta.numel()))
        mask = torch.zeros(delta.numel(), dtype=torch.bool)
        mask[torch.sort(delta.abs().flatten(), descending=True, stable=True).indices[:keep]] = True
        return torch.where(mask.view_as(delta), delta, torch.zeros_like(delta))

    def fastest(fn, delta):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(delta)
            times.append(time.perf_counter() - t0)
        return min(times)

    rows = []
    g = torch.Generator().manual_seed(0)
    for shape in [(49152, 576), (1536, 576)]:
        for dtype in ("float32", "bfloat16"):
            base = (torch.randn(shape, generator=g) * 0.02).to(getattr(torch, dtype))
            tuned = (base.float() + torch.randn(shape, generator=g) * 0.002).to(getattr(torch, dtype))
            delta = tuned.float() - base.float()
            row = {"shape": list(shape), "dtype": dtype, "top_k_s": fastest(lambda d: keep_top_magnitude(d, 0.2), delta),
                   "stable_sort_s": fastest(stable_sort_keep, delta)}
            rows.append(row)
            print(f"{shape} {dtype:8} exact top-k {row['top_k_s']:.3f}s | full stable sort {row['stable_sort_s']:.3f}s",
                  flush=True)
    return rows


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), recorded because speed ratios move with the machine."""
    try:
        return next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    platform.processor() or "?")
    except OSError:
        return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="k = 2; SmolLM2 only for the methods mergekit has, 2 repeats; the zoo once (under 3 minutes)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads in every child (default: 1 on the zoo, torch's default on SmolLM2)")
    ap.add_argument("--families", default=None, help="comma list: zoo,smollm2")
    ap.add_argument("--ks", default=None, help="comma list of k")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma list; 'new' stands for the issue-16 methods ({','.join(NEW_METHODS)})")
    ap.add_argument("--no-io", action="store_true", help="skip the I/O-floor measurement")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per measurement, the median reported (default 3; with --quick 2, the zoo 1)")
    ap.add_argument("--trim", action="store_true", help="time TIES' exact top-k trim against a full stable sort")
    ap.add_argument("--json-out", default=None, help="also write every measurement to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--base", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(CHILDREN[args.child](args.method, args.base, args.model, args.out)))
        return
    if args.trim:
        print(json.dumps({"bench": "trim", "rows": trim_bench(args.repeats or 3)}))
        return
    families = (args.families or "zoo,smollm2").split(",")
    ks = [int(k) for k in (args.ks or ("2" if args.quick else "2,4,8")).split(",")]
    print(f"# merge bench on {platform.node()} ({os.cpu_count()} cpus, {cpu_model()}), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, families={families}, ks={ks}", flush=True)
    names = [x for m in args.methods.split(",") for x in (NEW_METHODS if m == "new" else [m])]
    methods = {f: names for f in families}
    if args.quick and "smollm2" in methods:  # the SVD methods take minutes per SmolLM2 merge on 2 cores
        methods["smollm2"] = [m for m in methods["smollm2"] if m in MERGEKIT]
    # --quick: the zoo's merges take tens of milliseconds, so each of its runs is mostly a child's imports;
    # one run each keeps --quick under 3 minutes (the headline ratios come from SmolLM2, run twice).
    repeats = {f: args.repeats or ((1 if f == "zoo" else 2) if args.quick else 3) for f in families}
    result = run(families, ks, methods, args.threads, repeats, args.no_io)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    print(json.dumps(ratios(result["rows"])))


if __name__ == "__main__":
    main()
