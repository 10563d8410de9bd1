"""GPU check (issue 17 item 6): do merges and HF scoring on a CUDA device give the CPU's results, and what do
the SVD methods cost there against the bare ``torch.linalg.svd`` calls they are made of?

Written for one short call on a lent GPU machine (``bench/gpu_check.sh`` prepares it here and runs it there;
that script's ``--help`` gives the exact call). Three checks, each recorded even if another fails:

- ``merges``: task_arithmetic, ties, tsv_merge, iso_c and model_stock of three mini-zoo experts over the zoo
  base, through the production path (``study.merge.merge_state_dict``), on the CPU and on ``--device``;
  every tensor compared. Tolerances (``TOLERANCE``, max |device - CPU| over max |CPU| of each tensor): 1e-6
  for the elementwise methods (float32 has eps 1.2e-7; each entry sees a handful of operations that a GPU
  may fuse differently, so a few ulps), 1e-5 for model_stock (its ratio comes from a cosine reduced over a
  whole tensor, whose summation order differs between devices), 1e-4 for the SVD methods (cuSOLVER and
  LAPACK use different SVD algorithms that agree to about 1e-5 relative; truncation and orthogonalisation
  amplify that).
- ``svd``: tsv_merge, iso_c, iso_cts and subspace_boosting on synthetic Llama-8B-shaped projection matrices
  (bf16 on disk, as real checkpoints), timed per tensor through ``iter_merge`` on ``--device`` (read, copy
  to the device, method, copy back), against ``torch.linalg.svd`` timed alone on exactly the matrices the
  method decomposed (recorded in an untimed first pass, which is also the warm-up). ``ratio`` = method time
  / raw SVD time: what the method adds around its SVDs. ``raw_svd_s_by_shape`` feeds ``bench/cost_model.py
  --gpu-check``. A time budget skips what does not fit (recorded).
- ``scoring``: the HF backend (``study.evaluate.Evaluator``) scores one multiple-choice and one generation
  zoo task with the model on the CPU and on ``--device``, for the zoo base and a task_arithmetic merge loaded
  in place; scores must be equal exactly, and every document's choice / response is compared.

Results go to ONE JSON file, ``OUT/gpu_check.json`` (rewritten after each check, so a run cut short still
leaves what it finished), and are printed. Exit status 0 when every check passed, 1 otherwise.
``--device cpu`` runs the same code against the CPU (degenerate: it proves the code paths, not the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXPERTS = ("add", "capital", "first")
MERGE_METHODS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"lambda": 1.0},
    "ties": {"density": 0.2, "lambda": 1.0},
    "tsv_merge": {},
    "iso_c": {},
    "model_stock": {},
}
TOLERANCE = {"task_arithmetic": 1e-6, "ties": 1e-6, "model_stock": 1e-5, "tsv_merge": 1e-4, "iso_c": 1e-4}
SVD_METHODS = ("iso_c", "subspace_boosting", "tsv_merge", "iso_cts")
"""Cheapest first: when the time budget runs out, the most methods have been timed."""
SVD_SHAPES = {"cuda": "4096x4096,4096x14336", "cpu": "96x160,160x96"}
"""Llama-3.1-8B's q_proj / o_proj (4096 x 4096) and down_proj (4096 x 14336) on a GPU; small ones on a CPU."""
SCORING_TASKS = ("zoo:capital", "zoo:first")

GPU_IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex
requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
"""What the GPU machine's image holds (/work/.library/device/KINDS.md, "Python packages already there", read
on such a machine 2026-11-17; Python 3.12). ``--missing`` subtracts it from what a CPU run imported."""
EXTRA_CARRY = {"typing-extensions": "pydantic 2.14 requires >= 4.16.0; the image's version is not known, and "
                                    "a newer typing_extensions is backward compatible"}
"""Image packages carried anyway (they then shadow the image's copy), each with the reason."""


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- helpers ------------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(r), int(c)) for r, c in (s.lower().split("x") for s in text.split(",") if s)]
    except ValueError:
        raise SystemExit(f"--svd-shapes: expected ROWSxCOLS[,ROWSxCOLS...], got {text!r}") from None


def _section(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]], write: Callable[[], None]) -> None:
    """Run one check; an exception is recorded as that check's failure, and the others still run."""
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - one check's crash must not cost the others on a one-shot machine
        results[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-2000:]}
    results[name]["wall_s"] = round(time.perf_counter() - t0, 2)
    write()


def environment(device: str) -> dict[str, Any]:
    import torch

    from study.machine import package_version

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": device, "cpu_count": os.cpu_count(),
        **{name: package_version(name) for name in ("transformers", "lm_eval", "datasets", "peft", "numpy")},
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(device)
        env["linalg_library"] = str(torch.backends.cuda.preferred_linalg_library())
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32  # False (torch's default): float32 is float32
    manifest = REPO / ".gpu-check" / "manifest.json"
    if manifest.is_file():
        prepared = json.loads(manifest.read_text())
        env["prepared"] = {k: prepared.get(k) for k in ("git_head", "git_dirty_files", "prepared_at")}
        carried = [re.split(r"-\d", w, maxsplit=1)[0] for w in prepared.get("wheels", [])]
        try:
            env["requirement_conflicts"] = requirement_conflicts([canonical(n) for n in carried])
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not stop the checks
            env["requirement_conflicts"] = [f"not checked: {type(exc).__name__}: {exc}"]
    imports = REPO / ".gpu-check" / "imports.json"
    if imports.is_file():  # versions here of what the prepared CPU run imported: the GPU image's own may differ
        env["imported_versions"] = {d["name"]: package_version(d["name"]) for d in json.loads(imports.read_text())}
    return env


# --- (a) merges on the device equal the CPU's ---------------------------------------------------------------

def compare_states(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Largest |got - ref| over all tensors, absolute and relative to each tensor's largest |ref| entry."""
    import torch

    if set(ref) != set(got):
        return {"same_names": False, "only_cpu": sorted(set(ref) - set(got))[:5],
                "only_device": sorted(set(got) - set(ref))[:5]}
    worst_abs = worst_rel = 0.0
    worst_name, differing, bit_identical = "", 0, True
    for name, a in ref.items():
        b = got[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            return {"same_names": True, "mismatch": name, "cpu": [list(a.shape), str(a.dtype)],
                    "device": [list(b.shape), str(b.dtype)]}
        if torch.equal(a, b):
            continue
        bit_identical = False
        diff = (a.double() - b.double()).abs()
        differing += int((diff > 0).sum())
        scale = max(float(a.double().abs().max()), 1e-30)
        if float(diff.max()) / scale > worst_rel:
            worst_abs, worst_rel, worst_name = float(diff.max()), float(diff.max()) / scale, name
    return {"same_names": True, "bit_identical": bit_identical, "max_abs_diff": worst_abs,
            "max_rel_diff": worst_rel, "worst_tensor": worst_name, "entries_differing": differing}


def merge_check(zoo: Any, device: str, store: dict[str, Any]) -> dict[str, Any]:
    from study.merge import merge_state_dict, open_inputs
    from study.methods.registry import get_method

    base, ckpts = zoo.model("base"), [zoo.model(e) for e in EXPERTS]
    out: dict[str, Any] = {"experts": list(EXPERTS), "tolerance_rel": TOLERANCE, "methods": {}}
    for method, given in MERGE_METHODS.items():
        info = get_method(method)
        params = info.resolve_params(given, n_models=len(ckpts))
        row: dict[str, Any] = {"params": given}
        try:
            t0 = time.perf_counter()
            ref = merge_state_dict(open_inputs(base, ckpts, device="cpu"), info, params)
            row["cpu_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            got = merge_state_dict(open_inputs(base, ckpts, device=device), info, params)
            _sync(device)
            row["device_s"] = round(time.perf_counter() - t0, 3)
            row.update(compare_states(ref, got))
            row["passed"] = bool(row.get("same_names") and "mismatch" not in row
                                 and row["max_rel_diff"] <= TOLERANCE[method])
            if method == "task_arithmetic":
                store["task_arithmetic"] = ref
        except Exception as exc:  # noqa: BLE001 - recorded per method
            row.update(passed=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-1500:])
        out["methods"][method] = row
    out["passed"] = all(r["passed"] for r in out["methods"].values())
    return out


# --- (b) SVD methods vs raw torch.linalg.svd -----------------------------------------------------------------

def write_synthetic(root: Path, shapes: list[tuple[int, int]], k: int, seed: int = 0) -> tuple[Path, list[Path]]:
    """A base and ``k`` fine-tunes (base + a rank-16 change + noise), one down_proj-named matrix per shape, bf16."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    base = {f"model.layers.{i}.mlp.down_proj.weight": torch.randn(r, c, generator=gen) * 0.02
            for i, (r, c) in enumerate(shapes)}
    dirs = []
    for j in range(k + 1):
        state = base if j == 0 else {
            n: t + (torch.randn(t.shape[0], 16, generator=gen) @ torch.randn(16, t.shape[1], generator=gen)) * 2.5e-3
            + torch.randn(t.shape, generator=gen) * 1e-3 for n, t in base.items()}
        d = root / ("base" if j == 0 else f"ft{j}")
        d.mkdir(parents=True)
        save_file({n: t.to(torch.bfloat16).contiguous() for n, t in state.items()}, str(d / "model.safetensors"))
        dirs.append(d)
    return dirs[0], dirs[1:]


class SvdRecorder:
    """Replaces ``study.methods.common.svd`` (and the name every method module imported) with a wrapper that
    keeps a copy of each matrix it decomposes, tagged with the tensor being merged."""

    def __init__(self) -> None:
        self.current = ""
        self.matrices: list[tuple[str, Any]] = []
        self._patched: list[tuple[Any, Any]] = []

    def __enter__(self) -> "SvdRecorder":
        import study.methods.common as common

        original = common.svd

        def recording(matrix: Any) -> Any:
            self.matrices.append((self.current, matrix.detach().float().clone()))
            return original(matrix)

        for mod in [m for name, m in list(sys.modules.items()) if name.startswith("study.methods") and m]:
            if getattr(mod, "svd", None) is original:
                self._patched.append((mod, original))
                mod.svd = recording
        return self

    def __exit__(self, *exc: Any) -> None:
        for mod, original in self._patched:
            mod.svd = original


def _timed_merge(inputs: Any, info: Any, params: dict[str, Any], device: str,
                 progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Seconds per tensor of ``iter_merge`` (each merged tensor comes back to the CPU, which synchronises)."""
    from study.merge import iter_merge

    times: dict[str, float] = {}
    _sync(device)
    t = time.perf_counter()
    for name, _ in iter_merge(inputs, info, params, progress=progress):
        now = time.perf_counter()
        times[name] = now - t
        t = now
    return times


def _raw_svd_seconds(matrix: Any, device: str) -> float:
    import torch

    _sync(device)
    t0 = time.perf_counter()
    torch.linalg.svd(matrix, full_matrices=False)
    _sync(device)
    return time.perf_counter() - t0


def svd_check(device: str, shapes: list[tuple[int, int]], k: int, repeats: int, budget_s: float,
              partial: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    """Per method: seconds per tensor, raw SVD seconds of the same matrices, their ratio (see the module doc).

    ``partial`` gets the results so far after every pass (a run stopped by its time limit keeps them).
    """
    import torch

    from study.merge import open_inputs
    from study.methods.registry import get_method

    start = time.perf_counter()
    out: dict[str, Any] = {"shapes": [f"{r}x{c}" for r, c in shapes], "k": k, "budget_s": budget_s,
                           "repeats": repeats, "methods": {}, "skipped": []}
    torch.linalg.svd(torch.randn(64, 48, device=device), full_matrices=False)  # solver initialisation
    # One raw SVD per input shape first: the number the cost model needs, kept even if nothing else fits,
    # and the basis of each pass's predicted cost (a pass that would overrun the budget is skipped).
    probe = {f"{r}x{c}": _raw_svd_seconds(torch.randn(r, c, device=device), device) for r, c in shapes}
    raw_by_shape: dict[str, float] = dict(probe)
    out["raw_svd_s_by_shape"] = dict(raw_by_shape)
    partial(out)
    expected = {"iso_c": 1, "subspace_boosting": 1, "tsv_merge": k + 2, "iso_cts": k + 3}  # SVDs per tensor
    with tempfile.TemporaryDirectory(prefix="gpu-check-svd-") as tmp:
        base, ckpts = write_synthetic(Path(tmp), shapes, k)
        out["write_s"] = round(time.perf_counter() - start, 2)
        recorded: dict[str, list[tuple[str, Any]]] = {}
        for rep in range(repeats + 1):  # pass 0: untimed recording of the matrices (and warm-up)
            for method in SVD_METHODS:
                predicted = (1.2 if rep == 0 else 2.4) * expected.get(method, k + 3) * sum(probe.values())
                if method not in recorded and rep > 0 or time.perf_counter() - start + predicted > budget_s:
                    out["skipped"].append(f"{method} pass {rep} (predicted {predicted:.1f} s)")
                    continue
                info = get_method(method)
                params = info.resolve_params({}, n_models=k)
                inputs = open_inputs(base, ckpts, device=device)
                row = out["methods"].setdefault(method, {"method_s": {}, "raw_svd_s": {}, "n_svds": {}})
                if rep == 0:
                    with SvdRecorder() as rec:
                        _timed_merge(inputs, info, params, device, progress=lambda n: setattr(rec, "current", n))
                    recorded[method] = rec.matrices
                    for name in {n for n, _ in rec.matrices}:
                        row["n_svds"][name] = sum(1 for n, _ in rec.matrices if n == name)
                    continue
                for name, s in _timed_merge(inputs, info, params, device).items():
                    row["method_s"][name] = min(s, row["method_s"].get(name, float("inf")))
                raw: dict[str, float] = {}
                for name, matrix in recorded[method]:
                    s = _raw_svd_seconds(matrix, device)
                    raw[name] = raw.get(name, 0.0) + s
                    key = "x".join(map(str, matrix.shape))
                    raw_by_shape[key] = min(s, raw_by_shape.get(key, float("inf")))
                for name, s in raw.items():
                    row["raw_svd_s"][name] = min(s, row["raw_svd_s"].get(name, float("inf")))
                out["raw_svd_s_by_shape"] = dict(raw_by_shape)
                partial(out)
        recorded.clear()
    for row in out["methods"].values():
        both = [n for n in row["method_s"] if n in row["raw_svd_s"]]
        method_total = sum(row["method_s"][n] for n in both)
        raw_total = sum(row["raw_svd_s"][n] for n in both)
        row["method_s"] = {n: round(s, 4) for n, s in row["method_s"].items()}
        row["raw_svd_s"] = {n: round(s, 4) for n, s in row["raw_svd_s"].items()}
        row["ratio"] = round(method_total / raw_total, 3) if raw_total > 0 else None
    out["raw_svd_s_by_shape"] = {s: round(v, 4) for s, v in raw_by_shape.items()}
    # A timing, not a correctness check: it passes when it ran; ``complete`` says whether every method was timed.
    out["complete"] = len(out["methods"]) == len(SVD_METHODS) and all(r["ratio"] is not None for r in out["methods"].values())
    out["passed"] = True
    return out


# --- (c) HF backend scoring on the device equals the CPU's ---------------------------------------------------

def _per_doc(result: Any) -> dict[tuple[str, Any], Any]:
    return {(s["task"], s["doc_id"]): s.get("response", s.get("choice")) for s in result.samples}


def scoring_check(zoo_root: Path | None, zoo: Any, device: str, limit: int, store: dict[str, Any]) -> dict[str, Any]:
    from study.config import EvaluationSpec
    from study.evaluate import Evaluator, resolve_tasks

    spec = EvaluationSpec(tasks=list(SCORING_TASKS), limit=limit, batch_size=16, max_gen_toks=32)
    tasks = resolve_tasks(spec.tasks, zoo_root)
    t0 = time.perf_counter()
    on_cpu = Evaluator(zoo.model("base"), spec, tasks, device="cpu")
    on_dev = Evaluator(zoo.model("base"), spec, tasks, device=device)
    out: dict[str, Any] = {"tasks": list(SCORING_TASKS), "limit": limit, "setup_s": round(time.perf_counter() - t0, 2),
                           "models": {}}
    states = [("base", None)] + ([("task_arithmetic", store["task_arithmetic"])] if "task_arithmetic" in store else [])
    for label, state in states:
        t0 = time.perf_counter()
        a = on_cpu.evaluate(state)
        cpu_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = on_dev.evaluate(state)
        dev_s = time.perf_counter() - t0
        docs_a, docs_b = _per_doc(a), _per_doc(b)
        out["models"][label] = {
            "cpu": {t: s["score"] for t, s in a.scores.items()},
            "device": {t: s["score"] for t, s in b.scores.items()},
            "docs": len(docs_a), "docs_differing": sum(1 for key in docs_a if docs_b.get(key) != docs_a[key]),
            "cpu_s": round(cpu_s, 2), "device_s": round(dev_s, 2),
        }
        row = out["models"][label]
        row["passed"] = row["cpu"] == row["device"] and set(docs_a) == set(docs_b) and row["docs_differing"] == 0
    out["passed"] = len(out["models"]) == 2 and all(r["passed"] for r in out["models"].values())
    return out


# --- what a run imported (for the wheelhouse) ----------------------------------------------------------------

def imported_distributions() -> list[dict[str, str]]:
    """Every installed distribution that provides a module this process imported (this project excluded)."""
    from importlib.metadata import distribution, packages_distributions

    provides = packages_distributions()
    names = {d for top in {m.split(".")[0] for m in list(sys.modules)} for d in provides.get(top, [])}
    out = []
    for name in sorted(names, key=canonical):
        dist = distribution(name)
        if canonical(dist.metadata["Name"]) == "merge-study":
            continue
        wheel = dist.read_text("WHEEL") or ""
        out.append({"name": canonical(dist.metadata["Name"]), "version": dist.version,
                    "pure": "Root-Is-Purelib: true" in wheel})
    return out


def missing_on_gpu(imports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The imported distributions the GPU image lacks (``GPU_IMAGE_PACKAGES``)."""
    return [d for d in imports if canonical(d["name"]) not in GPU_IMAGE_PACKAGES or canonical(d["name"]) in EXTRA_CARRY]


def requirement_conflicts(carried: list[str]) -> list[str]:
    """Requirements of the carried distributions that the installed versions do not meet (``extra`` ones and
    absent distributions skipped: lm-eval lists many it does not import on the HF path). A failed GPU run
    starts here."""
    from importlib.metadata import PackageNotFoundError, distribution, version

    from packaging.requirements import Requirement

    out = []
    for name in carried:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            out.append(f"{name}: not installed")
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                out.append(f"{name} requires {req}, found {have}")
    return out


# --- main ---------------------------------------------------------------------------------------------------

def run_checks(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from study.zoo import load_zoo

    device = args.device
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_check.json"
    t0 = time.perf_counter()
    results: dict[str, Any] = {"check": "gpu_check", "device": device,
                               "degenerate": device == "cpu", "environment": environment(device)}

    def write() -> None:
        results["wall_s"] = round(time.perf_counter() - t0, 1)
        path.write_text(json.dumps(results, indent=1, sort_keys=False))

    write()
    if device.startswith("cuda") and not torch.cuda.is_available():
        results.update(passed=False, error="--device cuda but torch.cuda.is_available() is False")
        write()
        return results
    zoo_root = Path(args.zoo_root) if args.zoo_root else None
    zoo = load_zoo(zoo_root)
    store: dict[str, Any] = {}
    # Correctness first; the budgeted timing last, so a run cut short still has both verdicts.
    _section(results, "merges", lambda: merge_check(zoo, device, store), write)
    _section(results, "scoring", lambda: scoring_check(zoo_root, zoo, device, args.limit, store), write)
    shapes = _shapes(args.svd_shapes or SVD_SHAPES["cuda" if device.startswith("cuda") else "cpu"])

    def partial(svd: dict[str, Any]) -> None:
        results["svd"] = svd
        write()

    _section(results, "svd", lambda: svd_check(device, shapes, args.svd_k, args.svd_repeats, args.svd_budget_s,
                                               partial), write)
    results["passed"] = all(results[s].get("passed") for s in ("merges", "svd", "scoring"))
    results["json"] = str(path)
    write()
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few human lines; the JSON has everything."""
    lines = [f"gpu_check on {results['environment'].get('gpu', results['device'])}: "
             f"{'PASSED' if results.get('passed') else 'FAILED'} in {results.get('wall_s')} s"]
    merges = results.get("merges", {})
    for m, r in merges.get("methods", {}).items():
        lines.append(f"  merge {m:16} rel diff {r.get('max_rel_diff', '-')!s:>10} (tol {TOLERANCE[m]:g}) "
                     f"{'ok' if r.get('passed') else 'FAIL ' + str(r.get('error', ''))}")
    for m, r in results.get("svd", {}).get("methods", {}).items():
        lines.append(f"  svd   {m:16} method / raw SVD time {r.get('ratio')}")
    if "raw_svd_s_by_shape" in results.get("svd", {}):
        lines.append(f"  raw torch.linalg.svd seconds by shape: {results['svd']['raw_svd_s_by_shape']}"
                     f"{'' if results['svd'].get('complete') else ' (timing incomplete: see svd.skipped)'}")
    for label, r in results.get("scoring", {}).get("models", {}).items():
        lines.append(f"  score {label:16} cpu {r['cpu']} device {r['device']} docs differing {r['docs_differing']}"
                     f"/{r['docs']}")
    for s in ("merges", "svd", "scoring"):
        if "error" in results.get(s, {}):
            lines.append(f"  {s}: {results[s]['error']}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="device compared against the CPU (cpu: degenerate self-check)")
    p.add_argument("--zoo-root", help="directory holding the zoo-llama-* directory (default: $MERGE_STUDY_ZOO or ~/.cache)")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / ".gpu-check" / "out"),
                   help="directory for gpu_check.json (default $OUT, else .gpu-check/out)")
    p.add_argument("--limit", type=int, default=50, help="documents per scored task")
    p.add_argument("--svd-shapes", help=f"ROWSxCOLS list (default: {SVD_SHAPES['cuda']} on cuda, {SVD_SHAPES['cpu']} on cpu)")
    p.add_argument("--svd-k", type=int, default=2, help="fine-tunes merged in the SVD timing")
    p.add_argument("--svd-repeats", type=int, default=2, help="timed repetitions (fastest kept)")
    p.add_argument("--svd-budget-s", type=float, default=150.0, help="stop starting SVD passes after this many seconds")
    p.add_argument("--imports-out", help="also write the distributions this run imported (JSON), for the wheelhouse")
    p.add_argument("--missing", metavar="IMPORTS_JSON",
                   help="print NAME==VERSION PURE for each distribution in IMPORTS_JSON the GPU image lacks, and exit")
    args = p.parse_args()
    if args.missing:
        for d in missing_on_gpu(json.loads(Path(args.missing).read_text())):
            print(f"{d['name']}=={d['version']} {'pure' if d['pure'] else 'binary'}")
        return
    results = run_checks(args)
    if args.imports_out:
        Path(args.imports_out).write_text(json.dumps(imported_distributions(), indent=1))
    print("\n".join(summary_lines(results)))
    print(json.dumps(results, separators=(",", ":")))
    sys.exit(0 if results.get("passed") else 1)


if __name__ == "__main__":
    main()
