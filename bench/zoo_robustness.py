"""Does the mini zoo's design hold on any machine? Train it under one seed / thread count / determinism
setting and print each expert's own-skill margin over the base and the base's per-task scores.

Float sums differ between CPUs (AVX2 and AVX-512 kernels), thread counts and deterministic kernels, and
training amplifies the differences; a zoo whose quality checks held only for the committed seed on one
machine would fail elsewhere. Perturbing the seed is a stronger stand-in for another machine: every run
here must pass the checks of tests/test_zoo.py (same lm-eval code, ``study.zoo.quality``).

    python bench/zoo_robustness.py --seed s1 --threads 1
    python bench/zoo_robustness.py --threads 2 --deterministic
    python bench/zoo_robustness.py --zoo ~/.cache/merge-study/zoo/zoo-llama-...   # score a built zoo

Training runs in this one process (experts one after another), so ``--threads`` and ``--deterministic``
apply to every model. The last line is the run as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.machine import describe_machine  # noqa: E402
from study.zoo.catalog import MANIFEST, Zoo, read_zoo  # noqa: E402
from study.zoo.quality import (  # noqa: E402
    BASE_CEILING,
    BASE_FLOOR,
    LIMIT,
    MARGIN,
    base_scores,
    evaluate_zoo,
    margins,
    own_skill_plan,
    task_dict,
)
from study.zoo.spec import SEED, ZOO_VERSION  # noqa: E402


def train_zoo(out: Path, seed: str, threads: int, deterministic: bool) -> Zoo:
    """A zoo trained serially into ``out`` with the spec's recipe and the given perturbations."""
    import torch

    from study.zoo.build import train_all

    torch.use_deterministic_algorithms(deterministic)
    manifest = train_all(out, out, "llama", True, seed=seed, threads=threads, processes=1)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return read_zoo(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", default=SEED, help=f"root seed of every model (spec: {SEED!r})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training")
    parser.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")
    parser.add_argument("--limit", type=int, default=LIMIT, help="documents per task (tests use %(default)s)")
    parser.add_argument("--zoo", type=Path, help="score this built zoo directory instead of training one")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo-robustness-") as tmp:
        if args.zoo is not None:
            zoo = read_zoo(args.zoo)
        else:
            zoo = train_zoo(Path(tmp), args.seed, args.threads, args.deterministic)
        trained = time.perf_counter() - start
        import torch

        torch.use_deterministic_algorithms(False)
        scores = evaluate_zoo(zoo, task_dict(zoo), own_skill_plan(zoo), args.limit)
    gaps, base = margins(zoo, scores), base_scores(zoo, scores)

    print(f"\nzoo v{zoo.manifest['zoo_version']} (spec v{ZOO_VERSION}), seed {zoo.manifest.get('seed', SEED)!r}, "
          f"threads {zoo.manifest.get('threads', '?')}, deterministic {args.deterministic}, limit {args.limit}")
    print(f"{'expert':<10} {'task':<15} {'expert':>6} {'base':>6} {'margin':>7}")
    for expert, gap in gaps.items():
        task = zoo.skills[expert]
        flag = "" if gap >= MARGIN else "  < MARGIN"
        print(f"{expert:<10} {task:<15} {scores[expert, task].value:6.2f} {base[task]:6.2f} {gap:+7.2f}{flag}")
    mean = sum(base.values()) / len(base)
    print("base: " + ", ".join(f"{t.removeprefix('zoo_')} {v:.2f}" for t, v in base.items()) + f"; mean {mean:.3f}")
    ok = min(gaps.values()) >= MARGIN and mean >= BASE_FLOOR and max(base.values()) <= BASE_CEILING
    print(f"min margin {min(gaps.values()):+.2f} ({min(gaps, key=gaps.get)}); checks {'pass' if ok else 'FAIL'}; "
          f"train {trained:.0f} s, total {time.perf_counter() - start:.0f} s")
    print(json.dumps({
        "seed": zoo.manifest.get("seed", SEED), "threads": zoo.manifest.get("threads"),
        "deterministic": args.deterministic, "limit": args.limit, "zoo_version": zoo.manifest["zoo_version"],
        "margins": {k: round(v, 3) for k, v in gaps.items()}, "base": base, "base_mean": round(mean, 3),
        "min_margin": round(min(gaps.values()), 3), "pass": ok, "zoo_digest": zoo.manifest.get("zoo_digest"),
        "machine": describe_machine(), "train_seconds": round(trained),
    }))


if __name__ == "__main__":
    main()
