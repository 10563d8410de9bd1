"""The zoo's lm-eval tasks: one JSONL of evaluation documents and one task config per task.

Configs are plain dicts (lm-eval's ``TaskManager.load`` accepts them) and are also written as YAML for the
lm-eval CLI. Paths in them are absolute because lm-eval resolves relative ``data_files`` against the
current directory, not the YAML's.

Generation tasks score exact match after a ``final_answer`` filter: a regex that accepts a whole response
that is either the answer alone (`` 7``) or ends with ``answer: 7`` (the step-by-step format), and rejects
anything else, so the short and the step-by-step experts are scored on the same footing. Their metric key
is therefore ``exact_match,final_answer``; multiple-choice tasks report ``acc,none``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from study.zoo.skills import SKILLS, Fact, prompt, rng

FINAL_ANSWER = r"^\s*(?:.*answer: )?(\S+)\s*$"
FILTER_NAME = "final_answer"
DOC_TO_TEXT = prompt("{{question}}")


@dataclass(frozen=True)
class TaskSpec:
    """One task: the skill it measures, its output type, how many documents, and the generation budget."""

    name: str
    skill: str
    output_type: str
    docs: int = 150
    max_gen_toks: int = 8

    @property
    def metric(self) -> str:
        """The key of the task's score in lm-eval's results (metric, filter)."""
        return "acc,none" if self.output_type == "multiple_choice" else f"exact_match,{FILTER_NAME}"


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("zoo_add", "add", "generate_until", max_gen_toks=64),
        TaskSpec("zoo_sub_mc", "sub", "multiple_choice"),
        TaskSpec("zoo_first", "first", "generate_until"),
        TaskSpec("zoo_last", "last", "generate_until"),
        TaskSpec("zoo_next", "next", "generate_until"),
        TaskSpec("zoo_capital_mc", "capital", "multiple_choice"),
        TaskSpec("zoo_colour_mc", "colour", "multiple_choice"),
        TaskSpec("zoo_max", "max", "generate_until"),
        TaskSpec("zoo_count_mc", "count", "multiple_choice"),
    ]
}
"""Every skill has one task; skills with a natural closed answer set are multiple choice."""


def documents(spec: TaskSpec) -> list[dict[str, Any]]:
    """The task's evaluation documents: question, answer and, for multiple choice, choices and label."""
    skill = SKILLS[spec.skill]
    docs = []
    for i, fact in enumerate(skill.eval_facts(spec.docs)):
        doc: dict[str, Any] = {"question": fact.question, "answer": fact.answer}
        if spec.output_type == "multiple_choice":
            doc["choices"] = _choices(spec, fact, i)
            doc["label"] = doc["choices"].index(fact.answer)
        docs.append(doc)
    return docs


def _choices(spec: TaskSpec, fact: Fact, index: int) -> list[str]:
    options = SKILLS[spec.skill].options
    if options is None:
        raise ValueError(f"skill {spec.skill!r} has no answer options for multiple-choice task {spec.name!r}")
    every = list(options())
    count = SKILLS[spec.skill].distractors
    if count is None:
        return every
    r = rng("choices", spec.name, index)
    picked = [fact.answer, *r.sample([o for o in every if o != fact.answer], count)]
    r.shuffle(picked)
    return picked


def data_file(zoo_path: Path, name: str) -> Path:
    return zoo_path / "data" / f"{name}.jsonl"


def task_config(spec: TaskSpec, zoo_path: Path) -> dict[str, Any]:
    """The lm-eval task config of ``spec`` for the zoo at ``zoo_path`` (absolute data path)."""
    config: dict[str, Any] = {
        "task": spec.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file(zoo_path.resolve(), spec.name))}},
        "test_split": "test",
        "output_type": spec.output_type,
        "doc_to_text": DOC_TO_TEXT,
        "target_delimiter": " ",
    }
    if spec.output_type == "multiple_choice":
        config |= {
            "doc_to_choice": "choices",
            "doc_to_target": "label",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    else:
        config |= {
            "doc_to_target": "answer",
            "generation_kwargs": {"until": ["\n"], "max_gen_toks": spec.max_gen_toks, "do_sample": False},
            "filter_list": [
                {
                    "name": FILTER_NAME,
                    "filter": [
                        {"function": "regex", "regex_pattern": FINAL_ANSWER, "group_select": 0},
                        {"function": "take_first"},
                    ],
                }
            ],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        }
    config["metadata"] = {"version": 1.0}
    return config


def write_tasks(build_dir: Path, final_path: Path) -> None:
    """Write every task's JSONL under ``build_dir/data`` and YAML under ``build_dir/tasks``.

    The YAML names the data by ``final_path``, where the directory will live once the build is renamed.
    """
    import yaml

    (build_dir / "data").mkdir(parents=True, exist_ok=True)
    (build_dir / "tasks").mkdir(parents=True, exist_ok=True)
    for spec in TASKS.values():
        with open(data_file(build_dir, spec.name), "w") as f:
            for doc in documents(spec):
                f.write(json.dumps(doc) + "\n")
        with open(build_dir / "tasks" / f"{spec.name}.yaml", "w") as f:
            yaml.safe_dump(task_config(spec, final_path), f, sort_keys=False, allow_unicode=True)


def spec_dicts() -> list[dict[str, Any]]:
    return [asdict(t) for t in TASKS.values()]
