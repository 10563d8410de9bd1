"""What makes a zoo fit for merging studies, measured with lm-eval: each expert beats the base on its own
skill by ``MARGIN``, and the base keeps a broad level (it knows every answer format and masters none).

The test suite and ``bench/zoo_robustness.py`` both score a zoo with ``evaluate_zoo``, so a robustness run
checks exactly what the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.zoo.catalog import Zoo

LIMIT = 50
"""Documents per task in the expert-versus-base check: enough to see a 0.2 gap, few enough to be quick."""
MARGIN = 0.2
"""How much better than the base an expert must score on its own skill's task."""
BASE_FLOOR = 0.2
"""The base's least mean score over the expert skills' tasks: below it the base has not learned the
formats, and merges would be measured against a model that cannot answer at all."""
BASE_CEILING = 0.7
"""The base's highest score on any one task: above it no fine-tuning could show the margin reliably."""


@dataclass(frozen=True)
class Score:
    """One model on one task: the metric, the mean response length in tokens, and the responses."""

    value: float
    mean_tokens: float
    responses: list[str]


def task_dict(zoo: Zoo) -> dict[str, Any]:
    """lm-eval's task objects for every task of ``zoo``."""
    from lm_eval.tasks import TaskManager

    return dict(TaskManager(include_defaults=False).load(zoo.task_configs(["all"]))["tasks"])


def own_skill_plan(zoo: Zoo) -> dict[str, list[str]]:
    """The base on every expert skill's task, each expert on its own skill's task."""
    return {"base": sorted(set(zoo.skills.values()))} | {e: [zoo.skills[e]] for e in zoo.experts}


def evaluate_zoo(
    zoo: Zoo, tasks: dict[str, Any], plan: dict[str, list[str]], limit: int
) -> dict[tuple[str, str], Score]:
    """Score each model of ``plan`` on its tasks with lm-eval: {(model, task): Score}."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out: dict[tuple[str, str], Score] = {}
    for name, names in plan.items():
        model = AutoModelForCausalLM.from_pretrained(zoo.model(name))
        tokenizer = AutoTokenizer.from_pretrained(zoo.model(name))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16)
        results = evaluate(
            lm=lm,
            task_dict={t: tasks[t] for t in names},
            limit=limit,
            log_samples=True,
            apply_chat_template=False,
            fewshot_as_multiturn=False,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
        for task in names:
            samples = results["samples"][task]
            responses = [s["resps"][0][0] for s in samples if isinstance(s["resps"][0][0], str)]
            lengths = [len(tokenizer(r, add_special_tokens=False).input_ids) for r in responses]
            value = float(results["results"][task][zoo.metric(task)])
            out[name, task] = Score(value, sum(lengths) / max(1, len(lengths)), responses)
    return out


def margins(zoo: Zoo, scores: dict[tuple[str, str], Score]) -> dict[str, float]:
    """Each expert's score on its own skill's task minus the base's."""
    return {e: scores[e, zoo.skills[e]].value - scores["base", zoo.skills[e]].value for e in zoo.experts}


def base_scores(zoo: Zoo, scores: dict[tuple[str, str], Score]) -> dict[str, float]:
    """The base's score on each expert skill's task."""
    return {task: scores["base", task].value for task in sorted(set(zoo.skills.values()))}
