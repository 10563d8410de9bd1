"""The sweep file: a typed, validated description of one merging study.

Every model is frozen and forbids unknown fields, so a typo in a sweep is an error naming its YAML path
(``methods[1].params.density``) rather than a silently ignored key. The shape is a contract other tools rely
on: extend it, never rename a field. Loading does no heavy work (no torch, no model files): checks that need
checkpoints live in ``study.validate``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from study.errors import ConfigError

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class KExpression(BaseModel):
    """A parameter value written as ``c/k`` (``"1/k"`` = the mean of task vectors), resolved per cell.

    Parsed by a regular expression, never evaluated: sweep files are data.
    """

    model_config = _FROZEN
    numerator: float

    @classmethod
    def parse(cls, text: str) -> "KExpression | None":
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*k\s*", text)
        return cls(numerator=float(m.group(1))) if m else None

    def resolve(self, k: int) -> float:
        return self.numerator / k

    def __str__(self) -> str:
        n = Fraction(self.numerator).limit_denominator(1000)
        return f"{n}/k"


def resolve_value(value: Any, k: int) -> Any:
    """A parameter value as a method sees it for a cell merging ``k`` checkpoints."""
    if isinstance(value, str):
        expr = KExpression.parse(value)
        if expr is not None:
            return expr.resolve(k)
    if isinstance(value, dict):  # a per-tensor form: ``c/k`` resolves inside it too
        from study.param_forms import map_leaves

        try:
            return map_leaves(value, lambda v: resolve_value(v, k))
        except ValueError:
            return value  # not a form: the method's schema says so, naming the parameter
    return value


class ModelRef(BaseModel):
    """A model: ``zoo:NAME``, a local directory, or a hub id with an optional revision.

    ``trust_remote_code`` is off unless this checkpoint opts in explicitly (the report lists which did).
    """

    model_config = _FROZEN
    model: str = Field(min_length=1)
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def label(self) -> str:
        return self.model if self.revision is None else f"{self.model}@{self.revision}"


def _model_ref(value: Any) -> Any:
    return {"model": value} if isinstance(value, str) else value


class BaseSpec(BaseModel):
    """One base model and the fine-tuned checkpoints of it that the sweep merges."""

    model_config = _FROZEN
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelRef
    checkpoints: list[ModelRef] = Field(min_length=1)

    _coerce_model = field_validator("model", mode="before")(lambda cls, v: _model_ref(v))

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _coerce_checkpoints(cls, v: Any) -> Any:
        return [_model_ref(x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _distinct(self) -> "BaseSpec":
        labels = [c.label for c in self.checkpoints]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate checkpoint(s) {', '.join(dupes)}: each checkpoint may appear once")
        if self.model.label in labels:
            raise ValueError(f"the base {self.model.label} is also listed as a checkpoint")
        return self


ParamScalar = Union[bool, int, float, str]
ParamPoint = Union[ParamScalar, dict[str, Any]]
"""One value of a grid: a scalar, or a per-tensor mapping ``{gradient: [...]}`` / ``{filters: [...]}``
(mergekit's gradients and conditions, ``study.methods.tensor_params``)."""
ParamValue = Union[ParamPoint, list[ParamPoint]]


class MethodSpec(BaseModel):
    """A merge method and its hyper-parameters; a list value is a grid (every combination is a cell)."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    label: str | None = Field(default=None, description="name shown in figures; default: the method name")

    @field_validator("params")
    @classmethod
    def _forms(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A per-tensor value's shape is checked here (its values against the method in ``check_methods``)."""
        from study.param_forms import parse_form

        for key, value in params.items():
            for point in value if isinstance(value, list) else [value]:
                if isinstance(point, dict):
                    try:
                        parse_form(point)
                    except ValueError as exc:
                        raise ValueError(f"{key}: {exc}") from None
        return params

    def grid(self) -> list[dict[str, ParamPoint]]:
        """Every combination of the listed values, in file order (deterministic)."""
        combos: list[dict[str, ParamPoint]] = [{}]
        for key, value in self.params.items():
            values = value if isinstance(value, list) else [value]
            combos = [{**c, key: v} for c in combos for v in values]
        return combos


class CorpusSpec(BaseModel):
    """The texts of a fusion cell: the fields of ``study.statistics.spec.CalibrationSpec`` (the statistics'
    calibration sources, read by the same code), with fusion's defaults. Declared here so that the sweep schema
    imports no statistics or evaluation code; ``study.fusion.corpus.calibration`` converts, and a test keeps
    the two field sets equal."""

    model_config = _FROZEN
    source: Literal["zoo", "lm_eval", "file"] = "zoo"
    task: str | None = Field(default=None, description="lm-eval task name or YAML path (source: lm_eval)")
    split: Literal["train", "validation"] | None = Field(default=None, description="lm-eval split (default: "
                                                          "train when the task has one, else validation)")
    path: str | None = Field(default=None, description="a UTF-8 text file, one text per non-empty line (source: "
                                                       "file); keyed by its content digest")
    sequences: int = Field(default=256, ge=1, description="texts taken from the source")
    max_tokens: int = Field(default=128, ge=1, description="each text truncated to this many target tokens")


class FusionSpec(BaseModel):
    """A knowledge-fusion method (``study.fusion``): each drawn subset's checkpoints teach ``target``, trained
    on ``corpus``; a list value in ``params`` is a grid, as for merge methods. Cells share the merges' subsets."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    label: str | None = Field(default=None, description="name shown in figures; default: fusion <name>")
    target: str = Field(default="base", min_length=1,
                        description="the model trained: base (the subset's base), or one of the base's checkpoints")
    corpus: CorpusSpec = Field(default_factory=CorpusSpec, description="texts the teachers run on and the target "
                               "trains on (study.fusion.corpus; never an evaluated document)")

    def grid(self) -> list[dict[str, ParamPoint]]:
        """Every combination of the listed values, in file order, as a merge method's grid."""
        return MethodSpec(name=self.name, params=self.params).grid()


class SubsetSpec(BaseModel):
    """How checkpoint subsets are drawn: ``per_k`` seeded draws per k, exhaustive when C(n, k) <= per_k."""

    model_config = _FROZEN
    per_k: int = Field(default=3, ge=1)


class EvaluationSpec(BaseModel):
    """What each cell is scored on. Every field is part of a cell's key: changing one re-evaluates."""

    model_config = _FROZEN
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1, description="docs per task (None: all)")
    batch_size: int = Field(default=16, ge=1)
    max_gen_toks: int = Field(default=64, ge=1)
    num_fewshot: int | None = Field(default=None, ge=0)
    apply_chat_template: bool = False
    backend: Literal["hf", "vllm"] = "hf"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    seed: int = 1234
    ensemble: bool = Field(default=False, description="also evaluate the output ensemble of each subset (k forward passes)")
    vllm: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments (backend: vllm; CPU via scripts/vllm_env.sh, or the CUDA build)")
    bootstrap_iters: int = Field(default=100000, ge=0, description="lm-eval's bootstrap_iters: standard errors of every metric (closed form for means, this many resamples otherwise); 0: none")
    allow_code_execution: bool = Field(default=False, description="run tasks that execute model-written code (lm-eval's confirm_run_unsafe_code; HumanEval, MBPP); the report says so")


class ExecutorSpec(BaseModel):
    """Where cells run. Chosen explicitly (never auto-detected); ``--executor`` on the command line wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "pool", "slurm"] = "local"
    workers: int | None = Field(default=None, ge=1, description="pool: worker processes (default: GPUs or 1)")
    partition: str | None = None
    gpus_per_task: int = Field(default=0, ge=0)
    cpus_per_task: int = Field(default=2, ge=1)
    mem_gb: float = Field(default=16, gt=0)
    time_min: int = Field(default=240, ge=1)
    array_parallelism: int = Field(default=32, ge=1)
    cells_per_task: int = Field(default=8, ge=1)
    sbatch_extra: dict[str, Any] = Field(default_factory=dict)


class WandbSpec(BaseModel):
    """A Weights & Biases run for the sweep (``study.tracking_wandb``): one run, a row per finished cell, the
    report's summary and figures.

    ``mode`` defaults to offline (unless ``WANDB_MODE`` says otherwise): an offline run needs no account, no
    login and no network, so turning logging on can never stall or fail a sweep on a node without internet; its
    run directory is uploaded later with ``wandb sync``. ``online`` streams to the W&B server as cells finish."""

    model_config = _FROZEN
    project: str = Field(default="merge-study", min_length=1, description="W&B project of the run")
    entity: str | None = Field(default=None, description="W&B team or user [default: the logged-in user's]")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        default=None, description="online | offline | disabled [default: $WANDB_MODE, else offline]")
    name: str | None = Field(default=None, description="run name shown in W&B [default: the sweep's name]")
    tags: list[str] = Field(default_factory=list, description="run tags")
    group: str | None = Field(default=None, description="W&B run group (e.g. one per study across sweeps)")


class LoggingSpec(BaseModel):
    """Experiment trackers the sweep reports to. None of it is part of a cell key, the plan or the sweep hash."""

    model_config = _FROZEN
    wandb: WandbSpec | None = Field(default=None, description="log to Weights & Biases (the `wandb` extra)")


class MergeSpec(BaseModel):
    """How the driver merges: device and what to do with embedding rows beyond the base vocabulary."""

    model_config = _FROZEN
    device: str = "cpu"
    vocab_mismatch: Literal["refuse", "truncate"] = "refuse"


class SelectionSpec(BaseModel):
    """Hyper-parameter selection on held-out data (``study.validation``, docs/study.md "Selection").

    Each cell is also scored on a validation split of every task; the report picks, per (base, method, k), the
    grid point with the best validation ``measure`` and reports it on the test split beside the oracle (the best
    grid point on test), so the optimism of reading the best test score shows as a gap."""

    model_config = _FROZEN
    split: Literal["validation"] = Field(default="validation", description="the split grid points are chosen on")
    measure: Literal["avg"] = Field(default="avg", description="what is maximised: avg, the mean over counted "
                                                                 "subsets of avg(merge) on that split")
    tasks: dict[str, str] = Field(default_factory=dict, description="evaluation.tasks entry -> the task (lm-eval "
                                  "name or YAML file) that is its validation split; default: the zoo task's own "
                                  "validation split, or the lm-eval task's validation_split")


class Sweep(BaseModel):
    """A whole study: bases x methods x k x subsets, and how to evaluate each cell."""

    model_config = _FROZEN
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    bases: list[BaseSpec] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    fusion: list[FusionSpec] = Field(default_factory=list, description="knowledge-fusion methods run on the same "
                                     "subsets as the merges (study.fusion); none by default")
    ks: list[int] = Field(min_length=1)
    subsets: SubsetSpec = Field(default_factory=SubsetSpec)
    evaluation: EvaluationSpec
    merge: MergeSpec = Field(default_factory=MergeSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    description: str | None = None
    diagnostics: bool = Field(
        default=True, description="measure interference diagnostics (task-vector cosines, sign conflicts, subspace "
                                  "overlap, rank and norm of the merged delta) in every merge cell's merge pass and "
                                  "store them with its record (study.diagnostics); not part of any cell key")
    logging: LoggingSpec = Field(
        default_factory=LoggingSpec, exclude=True,
        description="experiment tracking (`logging: {wandb: {...}}`); left out of every dump, so it changes no "
                    "cell key, plan or sweep hash (the store keeps the run it logs to in wandb.json)")
    lineage: Literal["warn", "strict"] = Field(
        default="warn", description="a hub checkpoint whose model card's base_model chain does not reach its base: "
                                    "a warning (warn) or an error (strict) in `validate` and `fetch`")
    selection: SelectionSpec | None = Field(
        default=None, description="choose each method's grid point on a validation split and report it on test "
                                  "(study.validation); off by default, and then absent from the sweep's dump, so "
                                  "sweeps without it keep their hash and cell keys")

    @model_serializer(mode="wrap")
    def _omit_unset_optional_parts(self, handler: Any) -> Any:
        """No ``selection: null`` and no ``fusion: []`` in a dump: the sweep hash, plan.json and sweep.yaml of a
        sweep that uses neither stay what they were before the fields existed (paper/ provenance included)."""
        data = handler(self)
        if isinstance(data, dict):
            if data.get("selection", 0) is None:
                data.pop("selection")
            if data.get("fusion", None) == []:
                data.pop("fusion")
        return data

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        bad = [k for k in ks if k < 1]
        if bad:
            raise ValueError(f"k must be >= 1 (k = 1 means single checkpoints), got {bad}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"ks has duplicates: {ks}")
        return sorted(ks)

    @model_validator(mode="after")
    def _k_fits(self) -> "Sweep":
        for i, base in enumerate(self.bases):
            too_big = [k for k in self.ks if k > len(base.checkpoints)]
            if too_big:
                raise ValueError(
                    f"bases[{i}] ({base.name}) has {len(base.checkpoints)} checkpoints but ks asks for "
                    f"k = {too_big}: lower ks or add checkpoints"
                )
        names = [b.name for b in self.bases]
        if len(set(names)) != len(names):
            raise ValueError(f"base names must be distinct, got {names}")
        unknown = [t for t in (self.selection.tasks if self.selection else {}) if t not in self.evaluation.tasks]
        if unknown:
            raise ValueError(f"selection.tasks names {unknown[0]!r}, which is not in evaluation.tasks "
                             f"({', '.join(self.evaluation.tasks)})")
        return self


def _yaml_path(loc: tuple[Any, ...]) -> str:
    """``("methods", 2, "params", "density")`` → ``methods[2].params.density``; pydantic's union tags dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" not in str(part):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    path = _yaml_path(tuple(err["loc"]))
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown field (check its spelling against the sweep schema in README.md)"
    if kind == "missing":
        return f"{path}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{path}: {msg}{got_s}"


def parse_sweep(data: Any, source: str = "<sweep>") -> Sweep:
    """Validate already-loaded YAML data; errors name ``source`` and the YAML path of the bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a sweep file must be a YAML mapping at the top level")
    try:
        return Sweep.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {first}{more}") from None


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file with ``yaml.safe_load`` (sweep files are data, never code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    return parse_sweep(data, str(path))
