"""Building the mini zoo: train the base on the skill mixture, fine-tune one expert per skill, write tasks.

A build is cached by content: it goes into a hidden sibling directory, writes ``manifest.json`` last, then
renames itself to ``zoo-<arch>-<hash>``. A killed build leaves only a hidden directory, which the next build
removes; a directory with a manifest is complete and is returned at once. A lock file serialises builds of
the same zoo, so two processes (a test session and a CLI) never train it twice at the same time.

The base trains in this process; the experts, independent of each other, train in up to two spawned
single-threaded worker processes, each from the saved base. Every model is a pure function of its seed,
so the result does not depend on how the experts were scheduled.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from study.identity import content_digest
from study.machine import describe_machine
from study.zoo.catalog import MANIFEST, Zoo, read_zoo, zoo_path, zoo_summary
from study.zoo.family import DEFAULT, get_family
from study.zoo.skills import digest, drawer, mixture
from study.zoo.spec import BASE_STEPS_SHARE, BASE_TABLE_PERCENT, SHAPE, ZOO_VERSION
from study.zoo.tasks import TASKS, write_tasks
from study.zoo.train import THREADS


def build_zoo(
    root: Path | None = None, *, arch: str = "llama", family: str = DEFAULT, progress: bool = True
) -> Zoo:
    """The zoo of ``arch`` and ``family`` under ``root`` (default root if None), trained first if it is not
    complete."""
    path = zoo_path(root, arch, family)
    built = False
    if not (path / MANIFEST).is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(path.parent / f".{path.name}.lock"):
            if not (path / MANIFEST).is_file():
                _build(path, arch, progress, family)
                built = True
    zoo = read_zoo(path)
    if progress:
        print(zoo_summary(zoo, just_built=built), flush=True)
    return zoo


@contextlib.contextmanager
def _lock(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(path: Path, arch: str, progress: bool, family: str = DEFAULT) -> None:
    """Train into ``.<name>.tmp-<pid>`` beside ``path``, then rename it to ``path``. Holds the lock."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if path.exists():
        shutil.rmtree(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        manifest = train_all(tmp, path, arch, progress, family=family)
        staged = tmp / f"{MANIFEST}.tmp"
        staged.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staged, tmp / MANIFEST)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def workers() -> int:
    """Processes that train experts side by side: one per usable core, at most two.

    Experts are independent once the base exists, so two single-threaded processes halve the expert phase
    on two idle cores and, unlike two torch threads, slow down gracefully when the cores are shared.
    """
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def fit(
    out: Path,
    arch: str,
    name: str,
    progress: bool = False,
    *,
    seed: str | None = None,
    threads: int = THREADS,
    family: str = DEFAULT,
) -> dict[str, float]:
    """Train model ``name`` (``base``, or an expert from ``out/models/base``) of ``family`` and save it under
    ``out``.

    A module-level function so that a spawned worker process can run it; returns its timings and loss.
    ``seed`` (default the family's) and ``threads`` differ from the spec's only in robustness studies
    (bench/zoo_robustness.py). The base is the only model that builds a tokenizer: experts reuse its files.
    """
    from study.zoo.model import init_model, save_model
    from study.zoo.train import final_loss, train

    fam = get_family(family)
    seed = fam.seed if seed is None else seed
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "base":
        tokenizer = fam.build_tokenizer()
        model = init_model(SHAPE, arch, tokenizer, seed=digest(seed, arch, "init") % 2**31)
        draw, schedule = mixture(fam.base_mixture, BASE_STEPS_SHARE, BASE_TABLE_PERCENT), fam.base_schedule
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging

        logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(out / "models" / "base")
        model = AutoModelForCausalLM.from_pretrained(out / "models" / "base")
        skill, fmt = fam.experts[name]
        draw, schedule = drawer(skill, fmt), fam.expert_schedule
    curve = train(
        model, tokenizer, draw, schedule, seed=digest(seed, arch, name) % 2**31, threads=threads,
        desc=name, progress=progress,
    )
    save_model(model, tokenizer, out / "models" / name)
    return {
        "steps": schedule.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - c0, 1),
        "final_loss": round(final_loss(curve), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _report(progress: bool, name: str, r: dict[str, float]) -> None:
    _say(
        progress,
        f"  {name}: {r['steps']} steps in {r['seconds']:.0f} s ({r['cpu_seconds']:.0f} s CPU), "
        f"final loss {r['final_loss']:.3f}",
    )


def model_digests(out: Path, names: list[str]) -> tuple[dict[str, str], str]:
    """Each model's ``content_digest`` and the zoo digest: the sha256 over all of them, by name.

    Weights are what a zoo is; two builds on different CPUs share a ``spec_hash`` but not, in general,
    these digests, so results can name the exact zoo they were measured on.
    """
    digests = {name: content_digest(out / "models" / name) for name in names}
    text = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    return digests, "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def train_all(
    out: Path,
    final: Path,
    arch: str,
    progress: bool,
    *,
    seed: str | None = None,
    threads: int = THREADS,
    processes: int | None = None,
    family: str = DEFAULT,
) -> dict[str, Any]:
    """Train every model of ``family`` and write the tasks into ``out`` (to be renamed ``final``); return the
    manifest.

    ``processes`` (default ``workers()``) trains experts side by side; one trains them in this process.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    fam = get_family(family)
    seed = fam.seed if seed is None else seed
    experts = fam.experts
    start = time.perf_counter()
    n = workers() if processes is None else processes
    kind = arch if family == DEFAULT else f"{family} family, {arch}"
    _say(progress, f"building the mini zoo ({kind}) at {final}: base, then {len(experts)} experts x{n}")
    records = {"base": fit(out, arch, "base", progress, seed=seed, threads=threads, family=family)}
    _report(progress, "base", records["base"])
    if n == 1:
        for name in experts:
            records[name] = fit(out, arch, name, progress, seed=seed, threads=threads, family=family)
            _report(progress, name, records[name])
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n, mp_context=spawn) as pool:
            futures = {
                pool.submit(fit, out, arch, name, seed=seed, threads=threads, family=family): name
                for name in experts
            }
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                _report(progress, futures[future], records[futures[future]])
    write_tasks(out, final)
    digests, zoo_digest = model_digests(out, ["base", *experts])
    return {
        "zoo_version": ZOO_VERSION,
        "family": family,
        "arch": arch,
        "spec_hash": fam.spec_hash(arch),
        "parameters": records["base"]["parameters"],
        "models": ["base", *experts],
        "tasks": list(TASKS),
        "skills": {name: fam.own_task(name) for name in experts},
        "formats": {name: fmt for name, (_, fmt) in experts.items()},
        "training": {name: {k: v for k, v in r.items() if k != "parameters"} for name, r in records.items()},
        "workers": n,
        "build_seconds": round(time.perf_counter() - start, 1),
        "build_cpu_seconds": round(sum(r["cpu_seconds"] for r in records.values()), 1),
        "digests": digests,
        "zoo_digest": zoo_digest,
        "machine": describe_machine(),
        "seed": seed,
        "threads": threads,
        "spec": fam.spec(arch),
    }
