"""A built mini zoo as the rest of the harness sees it: model directories, task configs, and their names.

Everything here is plain Python (no torch): the CLI resolves ``zoo:NAME`` references and task lists
without paying for the training stack.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.zoo.family import DEFAULT, get_family
from study.zoo.names import ALL, PREFIX, PREFIXES, canonical_task, model_name, task_name, unknown
from study.zoo.tasks import TASKS, task_config

MANIFEST = "manifest.json"
"""Written last, atomically: its presence is what makes a zoo directory complete."""


def default_zoo_root() -> Path:
    """``$MERGE_STUDY_ZOO`` if set, else ``~/.cache/merge-study/zoo``."""
    env = os.environ.get("MERGE_STUDY_ZOO")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "merge-study" / "zoo"


def zoo_path(root: Path | None, arch: str, family: str = DEFAULT) -> Path:
    """Where the zoo of ``arch`` and ``family`` for the current spec lives under ``root`` (default root if None)."""
    return Path(root if root is not None else default_zoo_root()).expanduser() / get_family(family).dir_name(arch)


def build_flags(arch: str, family: str) -> str:
    """The ``zoo build`` options that build this zoo (empty for the default one)."""
    return ("" if arch == "llama" else f" --arch {arch}") + ("" if family == DEFAULT else f" --family {family}")


@dataclass
class Zoo:
    """A complete zoo directory: ``models`` maps ``base`` and each expert to its Hugging Face directory,
    ``tasks`` each task name to its lm-eval config (absolute data paths), ``skills`` each expert to the task
    of its own skill, ``generation_tasks`` lists the ``generate_until`` tasks; ``family`` is the zoo family
    (``study.zoo.family``), whose prefix spells its models."""

    path: Path
    models: dict[str, Path]
    tasks: dict[str, dict[str, Any]]
    skills: dict[str, str]
    generation_tasks: list[str]
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    family: str = DEFAULT

    @property
    def prefix(self) -> str:
        """How this zoo's models are spelled in sweeps: ``zoo:`` or ``zoo-bpe:``."""
        return PREFIXES[self.family]

    @property
    def experts(self) -> list[str]:
        return [m for m in self.models if m != "base"]

    def model(self, name: str) -> Path:
        """The directory of model ``name`` (``base`` or an expert, with or without the family's prefix)."""
        return self.models[model_name(name, list(self.models), self.prefix)]

    @property
    def digest(self) -> str:
        """The zoo digest: sha256 over every model's content digest, as recorded when it was built."""
        return str(self.manifest["zoo_digest"])

    def model_digest(self, name: str) -> str:
        """The content digest (``study.identity.content_digest``) of model ``name`` when it was built."""
        return str(self.manifest["digests"][model_name(name, list(self.models), self.prefix)])

    def task_configs(self, names: list[str]) -> list[dict[str, Any]]:
        """Fresh copies of the configs of ``names`` (any spelling of ``study.zoo.names``), in order; ``all``
        expands to every task."""
        out: list[dict[str, Any]] = []
        for name in names:
            task = task_name(name)
            if task == ALL:
                out.extend(copy.deepcopy(list(self.tasks.values())))
            elif task in self.tasks:
                out.append(copy.deepcopy(self.tasks[task]))
            else:
                raise unknown("task", name, {}, [PREFIX + ALL, *(canonical_task(t) for t in self.tasks)])
        return out

    def metric(self, task: str) -> str:
        """The key of ``task``'s score in lm-eval results: ``acc,none`` or ``exact_match,final_answer``."""
        name = task_name(task)
        if name not in self.tasks:
            raise unknown("task", task, {}, [canonical_task(t) for t in self.tasks])
        return TASKS[name].metric


def load_zoo(root: Path | None = None, *, arch: str = "llama", family: str = DEFAULT) -> Zoo:
    """The complete zoo of ``arch`` and ``family`` under ``root``, or a UserError saying how to build it."""
    path = zoo_path(root, arch, family)
    if not (path / MANIFEST).is_file():
        raise UserError(f"mini zoo not built at {path}: run `merge-study zoo build{build_flags(arch, family)}`")
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
        family=manifest.get("family", DEFAULT),
    )


def zoo_summary(zoo: Zoo, *, just_built: bool = False) -> str:
    """One line: architecture, size, models, tasks, what the build took, and where the zoo lives.

    A cached zoo says so: its build time is history, not what this call cost.
    """
    m = zoo.manifest
    mc = len(zoo.tasks) - len(zoo.generation_tasks)
    took = m.get("build_seconds")
    built = "" if took is None else f", built in {took:.0f} s" if just_built else f", cached (built earlier in {took:.0f} s)"
    kind = m.get("arch", "?") if zoo.family == DEFAULT else f"{zoo.family} family, {m.get('arch', '?')}"
    return (
        f"mini zoo ({kind}, {m.get('parameters', 0) / 1e3:.0f}k params): base + "
        f"{len(zoo.experts)} experts, {len(zoo.tasks)} tasks ({mc} multiple choice, "
        f"{len(zoo.generation_tasks)} generation){built} at {zoo.path}"
    )


def zoo_listing(root: Path | None = None, *, arch: str = "llama", family: str = DEFAULT) -> str:
    """What ``merge-study zoo list`` prints: where the zoo lives and how it was built, each model with the skill
    it was fine-tuned on and the task that scores it, each task with its lm-eval name and type.

    Names come from the spec, not the manifest, so the listing also tells how to use a zoo not built yet.
    """
    fam = get_family(family)
    path = zoo_path(root, arch, family)
    kind = arch if family == DEFAULT else f"{family} family, {arch}"
    lines = [f"mini zoo ({kind}) at {path}"]
    if (path / MANIFEST).is_file():
        m = read_zoo(path).manifest
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime((path / MANIFEST).stat().st_mtime))
        took = f" in {m['build_seconds']:.0f} s" if "build_seconds" in m else ""
        digest = f", digest {m['zoo_digest']}" if "zoo_digest" in m else ""
        lines.append(f"built {when}{took}: {m.get('parameters', 0) / 1e3:.0f}k parameters, "
                     f"spec {str(m.get('spec_hash', '?'))[:12]}{digest}")
    else:
        lines.append(f"not built yet: `merge-study zoo build{build_flags(arch, family)}` builds it (minutes, once)")
    own = {t.skill: canonical_task(t.name) + f" ({t.name})" for t in TASKS.values()}
    width = max(16, len(fam.prefix) + max(map(len, fam.experts)) + 1)
    row = ("  {:<%d}{:<10}{:<8}{}" % width).format
    lines += ["", f"models: {fam.prefix}NAME as --base, --model or a sweep's model/checkpoints",
              row("name", "skill", "format", "scored by task"), row(fam.prefix + "base", "(all)", "-", "-")]
    lines += [row(fam.prefix + expert, skill, fmt, own[skill]) for expert, (skill, fmt) in fam.experts.items()]
    task_row = "  {:<16}{:<18}{:<17}{}".format
    lines += ["", f"tasks: zoo:NAME or the lm-eval name in evaluation.tasks; {PREFIX}{ALL} is every task",
              task_row("name", "lm-eval name", "type", "documents")]
    lines += [task_row(canonical_task(t.name), t.name, t.output_type, t.docs) for t in TASKS.values()]
    return "\n".join(lines)
