"""A built mini zoo as the rest of the harness sees it: model directories, task configs, and their names.

Everything here is plain Python (no torch): the CLI resolves ``zoo:NAME`` references and task lists
without paying for the training stack.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.zoo.spec import dir_name
from study.zoo.tasks import TASKS, task_config

MANIFEST = "manifest.json"
"""Written last, atomically: its presence is what makes a zoo directory complete."""


def default_zoo_root() -> Path:
    """``$MERGE_STUDY_ZOO`` if set, else ``~/.cache/merge-study/zoo``."""
    env = os.environ.get("MERGE_STUDY_ZOO")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "merge-study" / "zoo"


def zoo_path(root: Path | None, arch: str) -> Path:
    """Where the zoo of ``arch`` for the current spec lives under ``root`` (default root if None)."""
    return Path(root if root is not None else default_zoo_root()).expanduser() / dir_name(arch)


def _unknown(kind: str, name: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UserError(f"unknown zoo {kind} {name!r}: {hint}known: {', '.join(known)}")


@dataclass
class Zoo:
    """A complete zoo directory: ``models`` maps ``base`` and each expert to its Hugging Face directory,
    ``tasks`` each task name to its lm-eval config (absolute data paths), ``skills`` each expert to the task
    of its own skill, ``generation_tasks`` lists the ``generate_until`` tasks."""

    path: Path
    models: dict[str, Path]
    tasks: dict[str, dict[str, Any]]
    skills: dict[str, str]
    generation_tasks: list[str]
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def experts(self) -> list[str]:
        return [m for m in self.models if m != "base"]

    def model(self, name: str) -> Path:
        """The directory of model ``name`` (``base`` or an expert)."""
        if name not in self.models:
            raise _unknown("model", name, list(self.models))
        return self.models[name]

    def task_configs(self, names: list[str]) -> list[dict[str, Any]]:
        """Fresh copies of the configs of ``names``, in order; ``all`` expands to every task."""
        out: list[dict[str, Any]] = []
        for name in names:
            if name == "all":
                out.extend(copy.deepcopy(list(self.tasks.values())))
            elif name in self.tasks:
                out.append(copy.deepcopy(self.tasks[name]))
            else:
                raise _unknown("task", name, ["all", *self.tasks])
        return out

    def metric(self, task: str) -> str:
        """The key of ``task``'s score in lm-eval results: ``acc,none`` or ``exact_match,final_answer``."""
        if task not in self.tasks:
            raise _unknown("task", task, list(self.tasks))
        return TASKS[task].metric


def load_zoo(root: Path | None = None, *, arch: str = "llama") -> Zoo:
    """The complete zoo of ``arch`` under ``root``, or a UserError saying how to build it."""
    path = zoo_path(root, arch)
    if not (path / MANIFEST).is_file():
        flag = "" if arch == "llama" else f" --arch {arch}"
        raise UserError(f"mini zoo not built at {path}: run `merge-study zoo build{flag}`")
    return read_zoo(path)


def read_zoo(path: Path) -> Zoo:
    """The zoo described by ``path/manifest.json``; task configs point at ``path`` wherever it now is."""
    path = path.resolve()
    manifest = json.loads((path / MANIFEST).read_text())
    return Zoo(
        path=path,
        models={name: path / "models" / name for name in manifest["models"]},
        tasks={name: task_config(TASKS[name], path) for name in manifest["tasks"]},
        skills=dict(manifest["skills"]),
        generation_tasks=[t for t in manifest["tasks"] if TASKS[t].output_type == "generate_until"],
        manifest=manifest,
    )


def zoo_summary(zoo: Zoo) -> str:
    """One line: architecture, size, models, tasks, and where the zoo lives."""
    m = zoo.manifest
    mc = len(zoo.tasks) - len(zoo.generation_tasks)
    built = f", built in {m['build_seconds']:.0f} s" if "build_seconds" in m else ""
    return (
        f"mini zoo ({m.get('arch', '?')}, {m.get('parameters', 0) / 1e3:.0f}k params): base + "
        f"{len(zoo.experts)} experts, {len(zoo.tasks)} tasks ({mc} multiple choice, "
        f"{len(zoo.generation_tasks)} generation){built} at {zoo.path}"
    )
