"""Scoring a model with lm-eval, in memory, reusing everything that does not change between cells.

One ``Evaluator`` per (base model, evaluation config) per process: the model object, tokenizer, ``HFLM``
wrapper and lm-eval task objects are built once; each cell copies its merged weights into the model in place
and calls ``lm_eval.evaluator.evaluate`` again (environment.md: ~1.3 s a call against ~20 s for the CLI).
Per-sample responses are kept, with token counts under the evaluated model's tokenizer, so response lengths
and scores can be recomputed without regenerating. Every backend calls lm-eval through ``run_lm_eval``, which
returns lm-eval's whole results dict as ``simple_evaluate`` would (``EvalResult.lm_eval``), from which the store
keeps lm-eval's own result files (``study.lm_eval_files``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from study.config import EvaluationSpec
from study.errors import UserError
from study.quiet import no_dataset_bars, no_loading_bar

SMALL_MODEL_PARAMS = 50_000_000
"""Below this size a CPU forward pass is too short for intra-op threads to pay: measured on the mini zoo
(0.6M parameters, 2 cores, other processes running), one evaluation took 1.2 s with 1 thread and 23 s with
2, because every small op waited for a descheduled sibling thread."""

PRIMARY_METRICS = ("acc", "exact_match", "acc_norm", "f1", "bleu", "mcc")

EVAL_BRIDGE_VERSION = 2
"""Part of every cell key: bump it when a change here changes scores or samples (how weights are loaded,
which metric is primary, how tokens are counted), so every cell is re-evaluated instead of mixing results.
2: few-shot examples drawn from a seed reset for every evaluation (1 drew them from an unseeded generator
that advanced from cell to cell), and records carry standard errors and lm-eval's own result files.
Counting an lm-eval group or tag once (``benchmarks``) did not bump it: tasks outside groups score and sample
exactly as before (every cell of the zoo sweeps keeps its record), and the entries only grew a ``benchmark``."""


@dataclass
class EvalResult:
    """Per task: the primary metric, its score and standard error, every metric lm-eval reported, and the
    samples; ``backend``: what a backend says about how it scored (kept in the record, e.g. vLLM's engine and
    whether it was fresh); ``lm_eval``: lm-eval's results dict with its samples, as ``simple_evaluate`` returns it."""

    scores: dict[str, dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    backend: dict[str, Any] = field(default_factory=dict)
    lm_eval: dict[str, Any] | None = None


def resolve_tasks(names: list[str], zoo_root: Path | None = None) -> list[Any]:
    """Task specs for lm-eval: zoo task dicts, the configs of task or group YAML files, or lm-eval task, group
    and tag names as they are.

    A zoo task has one name with the model of its skill (``zoo:add``) and is also accepted under the lm-eval
    name tables print (``zoo_add``, ``zoo:zoo_add``); the spelling is checked before the zoo is loaded. A task
    named twice (``zoo:all`` and ``zoo:add``) is an error, not a silently doubled evaluation. Each spec returned
    is one benchmark of the average (``benchmarks``), so a group must carry lm-eval's ``aggregate_metric_list``:
    without it lm-eval gives the group no score of its own, and that is said here, before any model is loaded.
    """
    import yaml

    from study.zoo.names import is_zoo_task, task_name

    out: list[Any] = []
    first_named_by: dict[str, str] = {}
    for name in names:
        if is_zoo_task(name):
            from study.zoo import load_zoo

            try:
                task = task_name(name)
            except UserError as exc:
                raise UserError(f"evaluation.tasks: {exc}") from None
            specs = load_zoo(zoo_root).task_configs([task])
        elif name.endswith((".yaml", ".yml")):
            path = Path(name)
            if not path.is_file():
                raise UserError(f"evaluation.tasks: task file {name} not found")
            cfg = yaml.safe_load(path.read_text())
            for task_cfg in _inline_tasks(cfg):
                _check_data_files(task_cfg, path)
            if _is_group(cfg):
                _check_aggregated(cfg, str(cfg["group"]))
            specs = [cfg]
        else:
            _check_task_name(name)
            specs = [name]
        for spec in specs:
            task = _task_name(spec)
            if task in first_named_by:
                raise UserError(f"evaluation.tasks: {first_named_by[task]!r} and {name!r} both name task {task}: "
                                f"list it once")
            first_named_by[task] = name
        out.extend(specs)
    return out


def _check_task_name(name: str) -> None:
    """An lm-eval task name must exist before any model is loaded (indexing lm-eval's tasks takes seconds,
    paid once per process and only by sweeps that name built-in tasks), and a group must have a score of its
    own (``_check_aggregated``). Glob patterns are left to lm-eval."""
    import difflib

    from study.zoo.names import canonical_task, task_spellings

    names = _task_index()
    if name in names and _kind(names[name]) == "GROUP":
        from lm_eval.tasks._yaml_loader import load_yaml

        entry = names[name]
        _check_aggregated(entry.cfg or load_yaml(entry.yaml_path, resolve_func=False), name)
    if name in names or any(ch in name for ch in "*?["):
        return
    zoo = {spelling: canonical_task(task) for spelling, task in task_spellings().items()}
    hint = [name] if name in zoo else difflib.get_close_matches(name, [*names, *zoo], n=1)
    did = f"; did you mean {zoo.get(hint[0], hint[0])!r}?" if hint else ""
    raise UserError(f"evaluation.tasks: unknown lm-eval task {name!r}{did} (`lm_eval --tasks list` lists them; "
                    f"or give a task YAML file or zoo:NAME)")


def _check_aggregated(cfg: dict[str, Any], name: str) -> None:
    """A group is one benchmark of the average, scored as lm-eval aggregates it; a group whose config has no
    ``aggregate_metric_list`` gets no score from lm-eval (its subtasks are reported one by one), so it cannot
    be one benchmark: the user says what is meant instead of the harness choosing a weighting."""
    if not cfg.get("aggregate_metric_list"):
        raise UserError(f"evaluation.tasks: group {name!r} has no aggregate_metric_list, so lm-eval gives it no "
                        f"score of its own and it cannot count as one benchmark of the average: name its tasks "
                        f"(each then counts once), or give a group YAML file with aggregate_metric_list "
                        f"(metric, weight_by_size)")


def _kind(entry: Any) -> str:
    """The kind of an lm-eval index entry (TASK, PY_TASK, GROUP, TAG) by name, without importing its enum."""
    return getattr(getattr(entry, "kind", None), "name", "")


def _is_group(spec: Any) -> bool:
    """A group config (a dict with ``group`` and a list of members), as opposed to a task config that names a
    tag under the old ``group:`` key."""
    return isinstance(spec, dict) and "group" in spec and not isinstance(spec.get("task"), str)


def _inline_tasks(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The task configs written out in ``cfg``: itself for a task, its members (recursively) for a group."""
    if not _is_group(cfg):
        return [cfg]
    members = cfg.get("task") or []
    return [t for m in (members if isinstance(members, list) else [members]) if isinstance(m, dict)
            for t in _inline_tasks(m)]


@functools.lru_cache(maxsize=1)
def _task_index() -> dict[str, Any]:
    """lm-eval's index of its tasks (name → entry with the task's YAML config, includes resolved)."""
    from lm_eval.tasks import TaskManager

    return dict(TaskManager().task_index)


def unsafe_tasks(specs: list[Any]) -> list[str]:
    """The tasks among ``specs`` (``resolve_tasks``' output) that lm-eval marks ``unsafe_code`` (they execute
    model-written code), read from their configs without building them, so ``validate`` can say so."""
    out = []
    for spec in specs:
        if isinstance(spec, dict):
            cfgs = _inline_tasks(spec)
        else:
            entry = _task_index().get(spec) if not any(ch in spec for ch in "*?[") else None
            cfgs = [getattr(entry, "cfg", None) or {}]
        out += [_task_name(cfg) for cfg in cfgs if cfg.get("unsafe_code")]
    return out


def check_code_execution(names: list[str], allowed: bool) -> None:
    """Tasks that run model-written code need ``evaluation.allow_code_execution: true`` (off by default)."""
    if names and not allowed:
        raise UserError(f"evaluation.tasks: {', '.join(names)} execute(s) code the model writes; set "
                        f"evaluation.allow_code_execution: true to run it (lm-eval's confirm_run_unsafe_code; "
                        f"off by default, and the report says when it was on)")


@contextlib.contextmanager
def code_execution(allowed: bool) -> Iterator[None]:
    """With ``allowed``, the environment switch that Hugging Face ``evaluate``'s ``code_eval`` metric (used by
    lm-eval's HumanEval and MBPP) requires besides lm-eval's own confirmation; restored afterwards."""
    if not allowed:
        yield
        return
    before = os.environ.get("HF_ALLOW_CODE_EVAL")
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_ALLOW_CODE_EVAL", None)
        else:
            os.environ["HF_ALLOW_CODE_EVAL"] = before


def _check_data_files(cfg: dict[str, Any], source: Path) -> None:
    files = ((cfg.get("dataset_kwargs") or {}).get("data_files")) or {}
    for split, f in (files.items() if isinstance(files, dict) else []):
        for one in f if isinstance(f, list) else [f]:
            p = Path(one)
            if not p.is_absolute():
                raise UserError(
                    f"{source}: data_files.{split} = {one!r} is relative; lm-eval resolves it against the current "
                    f"directory, not the YAML's: write an absolute path"
                )
            if not p.is_file():
                raise UserError(f"{source}: data_files.{split} = {one} does not exist")


def _task_name(spec: Any) -> str:
    """The name a spec is known by: a task config's task, a group config's group, or the name as given."""
    if _is_group(spec):
        return str(spec["group"])
    return spec["task"] if isinstance(spec, dict) else str(spec)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide lm-eval's per-request tqdm bars (it passes ``disable=`` itself, so ``TQDM_DISABLE`` cannot);
    they would bury the sweep's own progress bar. Exceptions still propagate with their tracebacks."""
    if os.environ.get("MERGE_STUDY_SHOW_LM_EVAL_PROGRESS"):
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield  # stdout too: lm-eval prints "bootstrapping for stddev" for every bootstrapped metric


def _set_seeds(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Evaluator:
    """lm-eval over one base model; ``evaluate(state_dict)`` scores that model's weights replaced in place."""

    def __init__(self, model_dir: Path, spec: EvaluationSpec, tasks: list[Any], *, device: str = "cpu",
                 trust_remote_code: bool = False):
        import torch
        from lm_eval.models.huggingface import HFLM
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from study.lm_eval_info import prefetch_environment

        prefetch_environment()  # its subprocesses run while the model loads
        for noisy in ("lm-eval", "lm_eval", "transformers", "datasets"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        self.spec = spec
        dtype = torch.float32 if spec.dtype == "auto" else getattr(torch, spec.dtype)
        with no_loading_bar():
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model.to(device).eval()
        if device == "cpu" and sum(p.numel() for p in self.model.parameters()) < SMALL_MODEL_PARAMS:
            torch.set_num_threads(1)
        self.lm = HFLM(pretrained=self.model, tokenizer=self.tokenizer, batch_size=spec.batch_size, device=device)
        with no_dataset_bars():
            self.task_dict = build_task_dict(tasks, spec)
        self.generation_tasks = {n for n, t in _flatten(self.task_dict) if _output_type(t) == "generate_until"}

    def load_weights(self, state_dict: dict[str, Any]) -> None:
        """Copy weights into the model in place; tied weights may be absent from ``state_dict``."""
        import torch

        params = dict(self.model.named_parameters(remove_duplicate=False))
        buffers = dict(self.model.named_buffers())
        tied = _tied_names(self.model)
        missing = [n for n in params if n not in state_dict and n not in tied]
        if missing:
            raise UserError(f"merged weights lack {len(missing)} tensors of the model, e.g. {missing[0]}")
        with torch.no_grad():
            for name, tensor in state_dict.items():
                target = params.get(name, buffers.get(name))
                if target is None:
                    continue
                target.copy_(tensor.to(target.dtype))

    def evaluate(self, state_dict: dict[str, Any] | None = None) -> EvalResult:
        """Score the model with ``state_dict`` loaded (None: as it is now)."""
        if state_dict is not None:
            self.load_weights(state_dict)
        return self._collect(run_lm_eval(self.lm, self.task_dict, self.spec))

    def _collect(self, results: dict[str, Any]) -> EvalResult:
        return collect_results(results, self.tokenizer, self.spec, self.generation_tasks)


def run_lm_eval(lm: Any, task_dict: dict[str, Any], spec: EvaluationSpec) -> dict[str, Any]:
    """lm-eval's ``evaluate`` on ``lm`` with the sweep's settings, completed as ``simple_evaluate`` completes it.

    Every backend scores through here, so standard errors (``bootstrap_iters``), few-shot examples and the
    code-execution confirmation mean the same everywhere. Task objects live across cells, and a task draws its
    few-shot examples from a generator that advances with every draw; ``simple_evaluate`` seeds it once per run,
    so it is seeded here before every evaluation (with the sweep's seed): every cell sees the same prompts, as
    one ``lm-eval --seed`` run per cell would. lm-eval bootstraps in a process pool unless ``DISABLE_MULTIPROC`` is
    set; its draws are seeded per chunk either way (the values are equal), and a pool forked from a process that
    holds a model or an engine is what a sweep worker must not do, so it is set for the call.
    """
    from lm_eval.evaluator import evaluate

    from study.lm_eval_info import add_run_info
    from study.lm_eval_reuse import reuse_requests, reuse_tokens

    reuse_requests(task_dict)  # built and tokenised once per task and wrapper, not once per cell
    reuse_tokens(lm)
    _set_seeds(spec.seed)
    for _, task in _flatten(task_dict):
        task.set_fewshot_seed(seed=spec.seed)
    started = time.time()
    before = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        with quiet_progress(), code_execution(spec.allow_code_execution):
            results = evaluate(lm=lm, task_dict=task_dict, limit=spec.limit, log_samples=True,
                               bootstrap_iters=spec.bootstrap_iters, apply_chat_template=spec.apply_chat_template,
                               fewshot_as_multiturn=False, verbosity="ERROR",
                               confirm_run_unsafe_code=spec.allow_code_execution)
    finally:
        if before is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = before
    add_run_info(results, lm, spec, started)
    results[BENCHMARKS_KEY] = benchmarks(task_dict)
    return results


def build_task_dict(tasks: list[Any], spec: EvaluationSpec) -> dict[str, Any]:
    """lm-eval task objects, built once per process, with the sweep's generation length and few-shot count.

    The result is what ``TaskManager.load`` returns (``tasks``, ``groups``, ``group_map``), which
    ``lm_eval.evaluator.evaluate`` takes as it is. A group config (from a group YAML file) is loaded as the
    lm-eval CLI loads ``--include_path DIR --tasks NAME``: written into a scratch directory that lm-eval indexes,
    then loaded by name (lm-eval 0.4.13 builds a group given as a dict or a file path with its structural keys
    passed on to its tasks, which fails). A tag (``headqa``: headqa_en and headqa_es) becomes a group of its
    tasks (``_tag_group``), so that it, too, counts once in the average.
    """
    import tempfile

    import yaml
    from lm_eval.tasks import TaskManager

    specs = [_with_settings(copy.deepcopy(t), spec) if isinstance(t, dict) else t for t in tasks]
    groups = [t for t in specs if _is_group(t)]
    needs_builtin = any(_names_builtin(t) for t in specs)
    try:
        with code_execution(spec.allow_code_execution), \
                tempfile.TemporaryDirectory(prefix="merge-study-groups-") as tmp:
            for i, group in enumerate(groups):
                (Path(tmp) / f"group_{i}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
            manager = TaskManager(include_defaults=needs_builtin, include_path=tmp if groups else None)
            task_dict = manager.load([_loadable(manager, t) for t in specs])
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"evaluation.tasks: lm-eval cannot build the tasks: {exc}") from None
    benchmarks(task_dict)  # a group without a score of its own is an error now, not after the first evaluation
    check_code_execution([n for n, t in _flatten(task_dict) if getattr(t, "UNSAFE_CODE", False)],
                         spec.allow_code_execution)
    for _, task in _flatten(task_dict):
        if spec.num_fewshot is not None:
            task.set_config(key="num_fewshot", value=spec.num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)  # as simple_evaluate does: its configs say 0, not nothing
        if _output_type(task) == "generate_until":
            kw = dict(task.config.generation_kwargs or {})
            task.set_config(key="generation_kwargs", value={**kw, "max_gen_toks": spec.max_gen_toks})
    return task_dict


def _with_settings(cfg: dict[str, Any], spec: EvaluationSpec) -> dict[str, Any]:
    """A task config (or each task config inside a group config) with the sweep's generation length, greedy
    decoding and few-shot count written in."""
    if _is_group(cfg):
        members = cfg.get("task")
        if isinstance(members, list):
            cfg["task"] = [_with_settings(m, spec) if isinstance(m, dict) else m for m in members]
        return cfg
    gen = cfg.get("generation_kwargs")
    if gen is not None:
        cfg["generation_kwargs"] = {**gen, "max_gen_toks": spec.max_gen_toks, "do_sample": False}
    if spec.num_fewshot is not None:
        cfg["num_fewshot"] = spec.num_fewshot
    return cfg


def _loadable(manager: Any, spec: Any) -> Any:
    """What ``TaskManager.load`` is given for ``spec``: a group config by its name (``manager`` indexed it),
    a tag as the group of its tasks, anything else as it is."""
    if _is_group(spec):
        return str(spec["group"])
    if isinstance(spec, str) and _kind(manager.task_index.get(spec)) == "TAG":
        return _tag_group(manager, spec)
    return spec


def _names_builtin(spec: Any) -> bool:
    """Whether ``spec`` refers to lm-eval's own tasks (a name, or a group member given by name or as a task
    reference with overrides), so its index must be built; a config with its own dataset does not."""
    if isinstance(spec, str):
        return True
    if _is_group(spec):
        members = spec.get("task") or []
        return any(_names_builtin(m) for m in (members if isinstance(members, list) else [members]))
    return not ("dataset_path" in spec or "class" in spec)


def _tag_group(manager: Any, tag: str) -> Any:
    """An lm-eval ``Group`` named ``tag`` holding the tag's tasks, aggregating every metric they all report with
    lm-eval's defaults (``AggMetricConfig``: mean, ``weight_by_size: true``).

    lm-eval expands a tag into independent tasks with no score of their own together; the sweep names the tag
    as one benchmark, and this is the group lm-eval would build from ``aggregate_metric_list`` entries left at
    their defaults, so lm-eval itself computes its score and standard error."""
    from lm_eval.api.group import Group
    from lm_eval.config.group import AggMetricConfig

    tasks = list(manager.load(tag)["tasks"].values())
    shared = [m for m in tasks[0].aggregation() if all(m in t.aggregation() for t in tasks[1:])] if tasks else []
    if not shared:
        raise UserError(f"evaluation.tasks: the tasks of tag {tag!r} share no metric to average: name them one "
                        f"by one")
    group = Group(name=tag, aggregate_metric_list=[AggMetricConfig(metric=m) for m in shared])
    for task in tasks:
        group.add(task)
    return group


@dataclass(frozen=True)
class Benchmark:
    """One entry of the average: a task that belongs to no group, or a top-level group with its leaf tasks and,
    per aggregated metric, lm-eval's ``weight_by_size`` (empty for a single task)."""

    name: str
    subtasks: tuple[str, ...] = ()
    weight_by_size: dict[str, bool] = field(default_factory=dict)


def benchmarks(task_dict: dict[str, Any]) -> dict[str, Benchmark]:
    """The benchmarks of a ``build_task_dict`` result, in task order: each top-level group (a group that is no
    other group's member) with all its leaf tasks, nested groups included, as ``Group.aggregate`` takes them,
    and each task outside every group on its own. A top-level group without ``aggregate_metric_list`` has no
    score of its own: a ``UserError`` (``_check_aggregated``)."""
    groups = task_dict.get("groups") or {}
    members = {child.name for g in groups.values() for child in g.get_all_groups(recursive=False)}
    out: dict[str, Benchmark] = {}
    leaf_of: dict[str, str] = {}
    for group in (g for name, g in groups.items() if name not in members):
        if not group.has_aggregation:
            _check_aggregated({}, group.name)
        leaves = tuple(t.task_name for t in group.get_all_tasks())
        leaf_of.update(dict.fromkeys(leaves, group.name))
        out[group.name] = Benchmark(group.name, leaves,
                                    {a.metric: bool(a.weight_by_size) for a in group.aggregate_metric_list})
    order = {name: i for i, name in enumerate(task_dict["tasks"])}
    for name in task_dict["tasks"]:
        if name not in leaf_of:
            out[name] = Benchmark(name)
    return dict(sorted(out.items(), key=lambda kv: min(order.get(t, 0) for t in kv[1].subtasks or (kv[0],))))


BENCHMARKS_KEY = "merge_study_benchmarks"
"""Where ``run_lm_eval`` hands ``collect_results`` the benchmarks of its task dict inside lm-eval's results;
``collect_results`` takes it out again, so lm-eval's result files stay lm-eval's."""


def collect_results(results: dict[str, Any], tokenizer: Any, spec: EvaluationSpec,
                    generation_tasks: set[str]) -> EvalResult:
    """Primary metric per task with its standard error, and per-sample records (responses re-tokenised with
    ``tokenizer``); ``results`` itself is kept as ``EvalResult.lm_eval``. A standard error is None where lm-eval
    gave none (``bootstrap_iters: 0``, one document, or a metric it cannot bootstrap: its "N/A").

    Every entry names its ``benchmark``: the task itself, or the top-level group it belongs to. A top-level
    group has an entry of its own, lm-eval's aggregate of its leaf tasks (``Group.aggregate``: lm-eval's
    ``aggregate_subtask_metrics`` with the group's ``weight_by_size``), with ``output_type: group``, its
    ``subtasks`` and the ``weight_by_size`` of its primary metric; groups nested inside it are left to lm-eval's
    result files. The average over a cell is then the mean over entries whose task is their benchmark."""
    structure: dict[str, Benchmark] = results.pop(BENCHMARKS_KEY, None) or {}
    benchmark_of = {leaf: b.name for b in structure.values() for leaf in b.subtasks}
    nested = set(results.get("group_subtasks") or {}) - set(structure) if structure else set()
    scores: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    for task, metrics in results["results"].items():
        if task in nested:
            continue
        clean = {k.split(",")[0]: v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not k.startswith("alias") and "_stderr" not in k}
        stderrs = {k.split(",")[0].removesuffix("_stderr"): float(v) for k, v in metrics.items()
                   if "_stderr" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
        primary = next((m for m in PRIMARY_METRICS if m in clean),
                       next((m for m in clean if m != "sample_len"), None))  # lm-eval's document count is no score
        if primary is None:
            continue
        scores[task] = {"metric": primary, "score": float(clean[primary]), "stderr": stderrs.get(primary),
                        "metrics": clean, "stderrs": stderrs,
                        "output_type": "generate_until" if task in generation_tasks else "multiple_choice",
                        "benchmark": benchmark_of.get(task, task)}
        group = structure.get(task)
        if group is not None and group.subtasks:
            scores[task].update(output_type="group", subtasks=list(group.subtasks),
                                weight_by_size=group.weight_by_size.get(primary, True))
    for task, rows in results.get("samples", {}).items():
        generative = task in generation_tasks
        for row in rows:
            samples.append(_sample(task, row, generative, tokenizer, spec.max_gen_toks))
    return EvalResult(scores, samples, lm_eval=results)


def _sample(task: str, row: dict[str, Any], generative: bool, tokenizer: Any, max_gen_toks: int) -> dict[str, Any]:
    out: dict[str, Any] = {"task": task, "doc_id": row.get("doc_id"), "target": str(row.get("target"))}
    metrics = {k: row[k] for k in ("acc", "exact_match", "acc_norm") if k in row}
    out["metrics"] = metrics
    if generative:
        response = row["resps"][0][0] if row.get("resps") else ""
        n_tokens = len(tokenizer(response, add_special_tokens=False)["input_ids"])
        out.update(response=response, filtered=str(row.get("filtered_resps", [""])[0]), n_tokens=n_tokens,
                   truncated=n_tokens >= max_gen_toks)
    else:
        lls = [r[0] if isinstance(r, (list, tuple)) else r for r in row.get("filtered_resps", [])]
        out["choice"] = max(range(len(lls)), key=lls.__getitem__) if lls else None
    return out


def _output_type(task: Any) -> str:
    return getattr(getattr(task, "config", None), "output_type", "") or getattr(task, "OUTPUT_TYPE", "")


def _flatten(task_dict: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every leaf task of a ``build_task_dict`` result, with its name (groups are expanded by lm-eval)."""
    return list(task_dict["tasks"].items())


def _tied_names(model: Any) -> set[str]:
    """Parameter names that share storage with an earlier parameter (e.g. lm_head tied to embed_tokens)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.data_ptr() in seen:
            tied.add(name)
        else:
            seen[p.data_ptr()] = name
    return tied
