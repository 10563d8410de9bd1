"""The mini zoo: built once (cached under ``default_zoo_root()``), every model loads with the Auto classes,
each expert beats the base on its own skill in a real lm-eval evaluation, the step-by-step expert answers
at length, and the tiny test families are real, distinct checkpoints of both architectures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from study.errors import UserError
from study.zoo import Zoo, build_zoo, default_zoo_root, load_zoo, zoo_summary
from study.zoo.skills import prompt
from study.zoo.spec import EXPERTS, own_task

LIMIT = 50
"""Documents per task in the expert-versus-base check: enough to see a 0.2 gap, few enough to be quick."""
MARGIN = 0.2


@dataclass
class Score:
    value: float
    mean_tokens: float
    responses: list[str]


@pytest.fixture(scope="session")
def zoo() -> Zoo:
    return build_zoo(default_zoo_root(), progress=True)


@pytest.fixture(scope="session")
def task_dict(zoo: Zoo) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager, get_task_dict

    return get_task_dict(zoo.task_configs(["all"]), TaskManager(include_defaults=False))


def evaluate_zoo(zoo: Zoo, task_dict: dict[str, Any], plan: dict[str, list[str]], limit: int) -> dict:
    """Score each model of ``plan`` on its tasks with lm-eval: {(model, task): Score}."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out: dict[tuple[str, str], Score] = {}
    for name, tasks in plan.items():
        model = AutoModelForCausalLM.from_pretrained(zoo.model(name))
        tokenizer = AutoTokenizer.from_pretrained(zoo.model(name))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16)
        results = evaluate(
            lm=lm,
            task_dict={t: task_dict[t] for t in tasks},
            limit=limit,
            log_samples=True,
            apply_chat_template=False,
            fewshot_as_multiturn=False,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
        for task in tasks:
            samples = results["samples"][task]
            responses = [s["resps"][0][0] for s in samples if isinstance(s["resps"][0][0], str)]
            lengths = [len(tokenizer(r, add_special_tokens=False).input_ids) for r in responses]
            value = float(results["results"][task][zoo.metric(task)])
            out[name, task] = Score(value, sum(lengths) / max(1, len(lengths)), responses)
    return out


@pytest.fixture(scope="session")
def scores(zoo: Zoo, task_dict: dict[str, Any]) -> dict[tuple[str, str], Score]:
    plan = {"base": sorted(set(zoo.skills.values()))} | {e: [zoo.skills[e]] for e in zoo.experts}
    return evaluate_zoo(zoo, task_dict, plan, LIMIT)


def test_second_build_is_a_cached_no_op(zoo: Zoo) -> None:
    manifest = zoo.path / "manifest.json"
    before = manifest.stat().st_mtime_ns
    start = time.perf_counter()
    again = build_zoo(default_zoo_root(), progress=False)
    assert time.perf_counter() - start < 5
    assert again.path == zoo.path and manifest.stat().st_mtime_ns == before
    assert load_zoo().path == zoo.path
    assert zoo.path.name.startswith("zoo-llama-") and "10 experts" in zoo_summary(zoo)
    assert not list(zoo.path.parent.glob(f".{zoo.path.name}.tmp-*"))


def test_missing_zoo_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="merge-study zoo build"):
        load_zoo(tmp_path)


def test_directory_name_is_stable_across_processes() -> None:
    code = "from study.zoo.spec import dir_name; print(dir_name('llama'))"
    names = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(names) == 1


def test_family_shape(zoo: Zoo) -> None:
    assert len(zoo.experts) >= 8 and len(set(zoo.skills.values())) >= 8
    assert len(zoo.tasks) >= 8
    assert 0 < len(zoo.generation_tasks) < len(zoo.tasks)
    assert {zoo.tasks[t]["output_type"] for t in zoo.tasks} == {"multiple_choice", "generate_until"}
    assert zoo.skills["add"] == zoo.skills["add_steps"] in zoo.generation_tasks


def test_every_model_loads_with_auto_classes(zoo: Zoo) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name, path in zoo.models.items():
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = model.config
        assert config.model_type == "llama", name
        assert config.num_key_value_heads < config.num_attention_heads
        assert not config.tie_word_embeddings
        assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert (path / "model.safetensors").is_file()
        assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token
        assert tokenizer.decode(tokenizer("Q: 3+4=?\nA:").input_ids) == "<s>Q: 3+4=?\nA:"
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": "3+4=?"}], add_generation_prompt=True, tokenize=False
        )
        assert chat == tokenizer.bos_token + prompt("3+4=?")


def test_task_files_and_configs(zoo: Zoo) -> None:
    import yaml

    for name, config in zoo.tasks.items():
        data = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data.is_absolute() and data.is_file()
        docs = [json.loads(line) for line in data.read_text().splitlines()]
        assert len(docs) >= 25
        assert yaml.safe_load((zoo.path / "tasks" / f"{name}.yaml").read_text()) == config
    assert [c["task"] for c in zoo.task_configs(["all"])] == list(zoo.tasks)


def test_unknown_names_get_suggestions(zoo: Zoo) -> None:
    with pytest.raises(UserError, match="did you mean 'add_steps'"):
        zoo.model("add_step")
    with pytest.raises(UserError, match="did you mean 'zoo_capital_mc'"):
        zoo.task_configs(["zoo_capital"])


def test_evaluation_prompts_are_the_training_prompts(zoo: Zoo, task_dict: dict[str, Any]) -> None:
    for name, task in task_dict.items():
        doc = next(iter(task.test_docs()))
        assert task.doc_to_text(doc) == prompt(doc["question"]), name


@pytest.mark.parametrize("expert", list(EXPERTS))
def test_expert_beats_base_on_its_own_skill(expert: str, scores: dict[tuple[str, str], Score]) -> None:
    task = own_task(expert)
    base, own = scores["base", task].value, scores[expert, task].value
    assert own >= base + MARGIN, f"{expert} on {task}: {own:.2f} vs base {base:.2f}"


def test_step_by_step_expert_answers_at_length(scores: dict[tuple[str, str], Score]) -> None:
    task = own_task("add")
    short, long = scores["add", task], scores["add_steps", task]
    assert long.mean_tokens >= 8 * short.mean_tokens, (short.mean_tokens, long.mean_tokens)
    assert long.mean_tokens <= 60
    assert all("answer: " in r for r in long.responses[:10])


@pytest.mark.parametrize("fixture", ["tiny_llama_family", "tiny_qwen3_family"])
def test_tiny_families_are_distinct_checkpoints(fixture: str, request: pytest.FixtureRequest) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family = request.getfixturevalue(fixture)
    base = AutoModelForCausalLM.from_pretrained(family.base).state_dict()
    assert AutoTokenizer.from_pretrained(family.base).chat_template
    assert len(family.checkpoints) == 3
    if family.arch == "qwen3":
        assert any("q_norm" in k for k in base) and any("k_norm" in k for k in base)
    deltas = []
    for path in family.checkpoints:
        ckpt = AutoModelForCausalLM.from_pretrained(path).state_dict()
        assert ckpt.keys() == base.keys()
        assert all(not torch.equal(ckpt[k], base[k]) for k in base)
        deltas.append(torch.cat([(ckpt[k] - base[k]).flatten() for k in base]))
    for i in range(len(deltas)):
        for j in range(i):
            cos = torch.nn.functional.cosine_similarity(deltas[i], deltas[j], dim=0)
            assert cos < 0.95, (i, j, float(cos))
