"""What a data-dependent method asks for: which statistic, of which model, on which calibration text.

A method (built-in or plugin) declares ``statistics=`` on ``@merge_method``: a function of its resolved
parameters returning :class:`StatisticRequest` s. The driver computes each once per (checkpoint identity,
calibration set, statistic) and hands the method a :class:`study.statistics.store.Statistics` that loads one
tensor's statistic at a time. Specs are pydantic models so that their JSON is the cache key, field for field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StatisticKind = Literal["gram", "fisher_diag", "act_abs_mean"]
"""``gram``: per ``nn.Linear`` weight, the mean input Gram matrix XᵀX/N over calibration tokens (RegMean).
``fisher_diag``: per parameter, the mean over calibration sequences of the squared gradient of the sequence's
LM loss (diagonal empirical Fisher, Fisher merging). ``act_abs_mean``: per ``nn.Linear`` weight, the mean
absolute input activation per input channel (AIM). ``lm_head`` gets no ``gram``/``act_abs_mean``."""

STATISTIC_VERSION = 1
"""Bumped when what a statistic computes changes, so cached files of the old computation are not reused."""


class CalibrationSpec(BaseModel):
    """Which texts the model is run on: the zoo's training mixture, an lm-eval task's train/validation docs,
    or a local UTF-8 text file (one sequence per non-empty line). Never the documents a sweep evaluates:
    :mod:`study.statistics.calibration` refuses an lm-eval task's evaluated split and any text whose prompt is
    an evaluated document's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["zoo", "lm_eval", "file"] = "zoo"
    task: str | None = None
    """lm-eval task name or task YAML path (``source: lm_eval``)."""
    split: Literal["train", "validation"] | None = None
    """The lm-eval split (None: train when the task has one, else validation)."""
    path: str | None = None
    """The text file (``source: file``); the cache key holds its content digest, not its path."""
    sequences: int = Field(64, ge=1)
    max_tokens: int = Field(512, ge=1)


class StatisticRequest(BaseModel):
    """One statistic a method needs, of the base or of every checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    statistic: StatisticKind
    of: Literal["checkpoints", "base"] = "checkpoints"
    calibration: CalibrationSpec = CalibrationSpec()


def parse_calibration(value: str, *, sequences: int = 64, max_tokens: int = 512, method: str = "?") -> CalibrationSpec:
    """A method's ``calibration`` parameter as a spec: ``zoo``, ``lm_eval:<task>[:train|:validation]`` or a
    text file's path."""
    from pathlib import Path

    from study.errors import MethodError

    if value == "zoo":
        return CalibrationSpec(source="zoo", sequences=sequences, max_tokens=max_tokens)
    if value.startswith("lm_eval:"):
        task, split = value[len("lm_eval:"):], None
        head, _, tail = task.rpartition(":")
        if head and tail in ("train", "validation"):
            task, split = head, tail
        if not task:
            raise MethodError(f"method {method!r}, parameter 'calibration': name the task, e.g. lm_eval:arc_easy:train")
        return CalibrationSpec(source="lm_eval", task=task, split=split, sequences=sequences, max_tokens=max_tokens)
    path = Path(value)
    if not path.is_file():
        raise MethodError(f"method {method!r}, parameter 'calibration': {path} is not a text file "
                          f"(or use 'zoo' or 'lm_eval:<task>[:train|:validation]')")
    return CalibrationSpec(source="file", path=str(path.resolve()), sequences=sequences, max_tokens=max_tokens)
