"""The mini zoo: built once (cached under ``default_zoo_root()``), every model loads with the Auto classes,
each expert beats the base on its own skill in a real lm-eval evaluation, the step-by-step expert answers
at length, and the tiny test families are real, distinct checkpoints of both architectures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.errors import UserError
from study.identity import content_digest
from study.machine import describe_machine
from study.zoo import Zoo, build_zoo, default_zoo_root, load_zoo, zoo_summary
from study.zoo.quality import (
    BASE_CEILING,
    BASE_FLOOR,
    LIMIT,
    MARGIN,
    Score,
    base_scores,
    evaluate_zoo,
    own_skill_plan,
    task_dict,
)
from study.zoo.skills import prompt
from study.zoo.spec import EXPERTS, own_task

@pytest.fixture(scope="session")
def zoo() -> Zoo:
    return build_zoo(default_zoo_root(), progress=True)


@pytest.fixture(scope="session")
def scores(zoo: Zoo) -> dict[tuple[str, str], Score]:
    return evaluate_zoo(zoo, task_dict(zoo), own_skill_plan(zoo), LIMIT)


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
    with pytest.raises(UserError, match="did you mean 'zoo:add_steps'"):
        zoo.model("add_step")
    with pytest.raises(UserError, match="did you mean 'zoo:capital'"):
        zoo.task_configs(["zoo_capital"])


def test_evaluation_prompts_are_the_training_prompts(zoo: Zoo) -> None:
    for name, task in task_dict(zoo).items():
        doc = next(iter(task.test_docs()))
        assert task.doc_to_text(doc) == prompt(doc["question"]), name


@pytest.mark.parametrize("expert", list(EXPERTS))
def test_expert_beats_base_on_its_own_skill(expert: str, scores: dict[tuple[str, str], Score]) -> None:
    task = own_task(expert)
    base, own = scores["base", task].value, scores[expert, task].value
    assert own >= base + MARGIN, f"{expert} on {task}: {own:.2f} vs base {base:.2f}"


def test_base_sees_a_fixed_part_of_each_table() -> None:
    """The base's cap on each table skill is a property of its data: it never sees the other facts."""
    from study.zoo.skills import SKILLS, drawer, mixture, rng
    from study.zoo.spec import BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT

    base, r = mixture(BASE_MIXTURE, BASE_STEPS_SHARE, BASE_TABLE_PERCENT), rng("test-table-part")
    seen = {p for p, _ in (base(r) for _ in range(5000))}
    for name, skill in SKILLS.items():
        if skill.space is None:
            continue
        table = {prompt(f.question) for f in skill.space()}
        part = {prompt(f.question) for f in skill.space() if skill.in_part(f.question, BASE_TABLE_PERCENT)}
        assert seen & table == part, name
        assert 0.3 <= len(part) / len(table) <= 0.7, name
        expert = drawer(name)
        assert {expert(r)[0] for _ in range(3000)} == table, name


def test_base_is_a_generalist(zoo: Zoo, scores: dict[tuple[str, str], Score]) -> None:
    """The base knows every format (a broad mean) and masters no skill (room for each expert's margin)."""
    base = base_scores(zoo, scores)
    assert sum(base.values()) / len(base) >= BASE_FLOOR, base
    assert max(base.values()) <= BASE_CEILING, base


def test_manifest_digests_are_the_model_contents(zoo: Zoo) -> None:
    digests = zoo.manifest["digests"]
    assert set(digests) == set(zoo.models)
    for name, path in zoo.models.items():
        assert zoo.model_digest(name) == digests[name] == content_digest(path), name
    assert zoo.model_digest("zoo:add") == digests["add"]
    assert len(set(digests.values())) == len(digests)
    assert zoo.digest == zoo.manifest["zoo_digest"] and zoo.digest.startswith("sha256:")
    with pytest.raises(UserError, match="unknown zoo model"):
        zoo.model_digest("nobody")


def test_zoo_digest_covers_every_model(tmp_path: Path) -> None:
    from study.zoo.build import model_digests

    for name, text in (("base", "{}"), ("a", "{}")):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text(text)
    digests, before = model_digests(tmp_path, ["base", "a"])
    assert digests["base"] == digests["a"] == content_digest(tmp_path / "models" / "a")
    (tmp_path / "models" / "a" / "config.json").write_text('{"x": 1}')
    after_digests, after = model_digests(tmp_path, ["base", "a"])
    assert after_digests["a"] != digests["a"] and after != before


def test_manifest_records_the_machine(zoo: Zoo) -> None:
    machine = zoo.manifest["machine"]
    assert set(machine) == {"cpu", "isa", "python", "torch", "transformers", "lm_eval"}
    assert all(isinstance(v, str) and v for v in machine.values())
    assert machine["isa"] in {"avx512", "avx2", "avx", "sse", "aarch64", "arm64", describe_machine()["isa"]}


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


def test_progress_bar_ends_on_the_reported_final_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build reports ``final_loss`` (mean of the last ``SMOOTHING`` steps); the bar's last value is it."""
    import tqdm.auto

    from study.zoo.model import init_model
    from study.zoo.skills import drawer
    from study.zoo.tiny import TINY_SHAPE
    from study.zoo.tokenizer import build_tokenizer
    from study.zoo.train import SMOOTHING, Schedule, final_loss, train

    shown: list[str] = []

    class Bar:
        """tqdm as ``train`` uses it, recording what the bar shows."""

        def __init__(self, **_: object) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def update(self, _: int) -> None:
            pass

        def set_postfix(self, loss: str) -> None:
            shown.append(loss)

    tokenizer = build_tokenizer()
    model = init_model(TINY_SHAPE, "llama", tokenizer, seed=0)
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    schedule = Schedule(13, 1e-3, batch=4, warmup=2)
    losses = train(model, tokenizer, drawer("max"), schedule, seed=0, progress=True)
    assert len(shown) == 2 and shown[-1] == f"{final_loss(losses):.3f}"
    assert final_loss(losses) == pytest.approx(sum(losses[-SMOOTHING:]) / SMOOTHING)
