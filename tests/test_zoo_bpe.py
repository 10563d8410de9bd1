"""The bpe zoo family: a deterministic byte-level BPE tokenizer unlike the character zoo's, models spelled
``zoo-bpe:NAME`` wherever ``zoo:NAME`` works, and (slow: built once, cached) experts that beat their base on
their own skill and merge; the character zoo's spec stays the one paper/mini was made on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.sweeps import cli
from study.errors import UserError
from study.zoo.catalog import MANIFEST, zoo_path
from study.zoo.family import FAMILIES, get_family
from study.zoo.names import split_model_ref
from study.zoo.quality import BASE_CEILING, BASE_FLOOR, LIMIT, MARGIN, Score, base_scores, evaluate_zoo, own_skill_plan, task_dict
from study.zoo.tasks import TASKS, documents, write_tasks
from study.zoo.tiny import TinyFamily, make_tiny_family

CHAR_DIR = "zoo-llama-c2a3f5cb8dd1"
"""The character zoo paper/mini was made on (zoo digest sha256:3aa66005... on an AMD EPYC): families must not
rename it. Changing it on purpose (a new ZOO_VERSION) means regenerating paper/mini, then updating this."""

TOKENIZER_JSON = """
import sys
from study.zoo.bpe import build_bpe_tokenizer
sys.stdout.write(build_bpe_tokenizer().backend_tokenizer.to_str())
"""


def texts() -> list[str]:
    """Every evaluation prompt with its answer, as lm-eval scores them."""
    return [f"Q: {d['question']}\nA: {d['answer']}\n" for t in TASKS.values() for d in documents(t)]


def test_tokenizer_is_deterministic_across_processes(tmp_path: Path) -> None:
    from study.zoo.bpe import build_bpe_tokenizer

    here = build_bpe_tokenizer()
    here.save_pretrained(tmp_path / "a")
    build_bpe_tokenizer().save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    other = subprocess.run([sys.executable, "-c", TOKENIZER_JSON], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123", "TOKENIZERS_PARALLELISM": "true"})
    assert other.stdout == here.backend_tokenizer.to_str()


def test_tokenizer_round_trips_and_differs_from_the_character_zoo(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from study.zoo.bpe import VOCAB_SIZE, build_bpe_tokenizer
    from study.zoo.tokenizer import SPECIAL_TOKENS, build_tokenizer

    build_bpe_tokenizer().save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    bpe, char = AutoTokenizer.from_pretrained(tmp_path), build_tokenizer()
    assert len(bpe) == VOCAB_SIZE and len(char) < 100
    assert [bpe.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [char.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    specials = set(SPECIAL_TOKENS)
    assert not (set(bpe.get_vocab()) - specials) >= (set(char.get_vocab()) - specials)  # " " is "Ġ" in bpe
    assert len(set(bpe.get_vocab()) - set(char.get_vocab())) > 200
    n_bpe = n_char = 0
    for text in texts():
        prompt, answer = text.split("\nA:")[0] + "\nA:", text.split("\nA:")[1]
        ids = bpe(text).input_ids
        assert ids[0] == bpe.bos_token_id and bpe.decode(ids, skip_special_tokens=True) == text
        # lm-eval's _encode_pair and training both take the prompt's tokens as a prefix of the whole's
        assert bpe(prompt).input_ids + bpe(answer, add_special_tokens=False).input_ids == ids, text
        n_bpe, n_char = n_bpe + len(ids), n_char + len(char(text).input_ids)
    assert n_bpe < 0.8 * n_char, (n_bpe, n_char)
    question = [{"role": "user", "content": "1+2=?"}]
    assert bpe.apply_chat_template(question, add_generation_prompt=True, tokenize=False) == "<s>Q: 1+2=?\nA:"


def test_families_and_their_spellings() -> None:
    assert zoo_path(None, "llama").name == CHAR_DIR
    assert zoo_path(None, "llama", "char") == zoo_path(None, "llama")
    bpe_dir = zoo_path(None, "llama", "bpe").name
    assert bpe_dir.startswith("zoo-bpe-llama-") and zoo_path(None, "qwen3", "bpe").name.startswith("zoo-bpe-qwen3-")
    assert FAMILIES["bpe"].spec("llama")["tokenizer"]["kind"] == "byte_level_bpe"
    assert "tokenizer" not in FAMILIES["char"].spec("llama")
    from study.zoo import spec

    char = FAMILIES["char"]
    assert (char.seed, char.experts, char.base_mixture) == (spec.SEED, spec.EXPERTS, spec.BASE_MIXTURE)
    assert (char.base_schedule, char.expert_schedule) == (spec.BASE_SCHEDULE, spec.EXPERT_SCHEDULE)
    assert FAMILIES["bpe"].experts == spec.EXPERTS and not {"first", "last"} & set(FAMILIES["bpe"].base_mixture)
    assert split_model_ref("zoo-bpe:add") == ("bpe", "add") and split_model_ref("zoo:add") == ("char", "add")
    assert split_model_ref("org/model") is None and split_model_ref("./zoo:add") is None
    with pytest.raises(UserError, match="unknown zoo family 'wordpiece'"):
        get_family("wordpiece")


def fake_bpe_zoo(root: Path, family: TinyFamily) -> Path:
    """The tiny bpe family laid out as a built bpe zoo (models ``base``, ``add``, ``sub``)."""
    path = zoo_path(root, "llama", "bpe")
    (path / "models").mkdir(parents=True)
    names = ["base", "add", "sub"]
    for name, src in zip(names, [family.base, *family.checkpoints]):
        (path / "models" / name).symlink_to(src, target_is_directory=True)
    write_tasks(path, path)
    manifest = {"family": "bpe", "arch": "llama", "parameters": 1000, "build_seconds": 1.0, "models": names,
                "tasks": list(TASKS), "skills": {"add": "zoo_add", "sub": "zoo_sub_mc"},
                "digests": {n: f"sha256:{n}" for n in names}, "zoo_digest": "sha256:fake-bpe"}
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def tiny_bpe_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bpe-zoo-root")
    fake_bpe_zoo(root, make_tiny_family(root.parent / "tiny-bpe", n_checkpoints=2, tokenizer="bpe"))
    return root


def test_zoo_bpe_names_resolve_like_zoo_names(tiny_bpe_root: Path) -> None:
    from study.checkpoints import model_dir, resolve_model
    from study.config import ModelRef
    from study.zoo import load_zoo

    zoo = load_zoo(tiny_bpe_root, family="bpe")
    assert zoo.family == "bpe" and zoo.prefix == "zoo-bpe:"
    assert model_dir("zoo-bpe:add", tiny_bpe_root) == zoo.model("add") == zoo.model("zoo-bpe:add")
    resolved = resolve_model(ModelRef(model="zoo-bpe:sub"), tiny_bpe_root)
    assert resolved.path == zoo.model("sub") and resolved.identity == "sha256:sub"
    with pytest.raises(UserError, match="did you mean 'zoo-bpe:add'"):
        model_dir("zoo-bpe:ad", tiny_bpe_root)
    with pytest.raises(UserError, match="zoo build --family bpe"):
        load_zoo(tiny_bpe_root / "elsewhere", family="bpe")
    listing = cli("zoo", "list", "--family", "bpe", "--zoo", str(tiny_bpe_root)).stdout
    assert "zoo-bpe:add_steps" in listing and "bpe family" in listing and "zoo:capital" in listing
    assert cli("zoo", "path", "add", "--family", "bpe", "--zoo", str(tiny_bpe_root)).stdout.strip() == str(zoo.model("add"))


def test_merge_of_two_tiny_bpe_checkpoints(tiny_bpe_root: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    cli("merge", "--method", "task_arithmetic", "--base", "zoo-bpe:base", "--model", "zoo-bpe:add",
        "--model", "zoo-bpe:sub", "--out", str(out), "--zoo", str(tiny_bpe_root))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(out)) == 384


@pytest.fixture(scope="module")
def bpe_zoo():
    from study.zoo import build_zoo

    return build_zoo(family="bpe", progress=True)


@pytest.fixture(scope="module")
def bpe_scores(bpe_zoo) -> dict[tuple[str, str], Score]:
    return evaluate_zoo(bpe_zoo, task_dict(bpe_zoo), own_skill_plan(bpe_zoo), LIMIT)


@pytest.mark.slow
def test_bpe_zoo_is_complete(bpe_zoo) -> None:
    from transformers import AutoTokenizer

    assert bpe_zoo.family == "bpe" and bpe_zoo.path.name.startswith("zoo-bpe-llama-")
    assert set(bpe_zoo.experts) == set(FAMILIES["bpe"].experts)
    assert bpe_zoo.manifest["spec"]["tokenizer"]["vocab_size"] == 384
    assert len(AutoTokenizer.from_pretrained(bpe_zoo.model("zoo-bpe:add"))) == 384


@pytest.mark.slow
@pytest.mark.parametrize("expert", list(FAMILIES["bpe"].experts))
def test_bpe_expert_beats_bpe_base_on_its_own_skill(expert: str, bpe_zoo, bpe_scores) -> None:
    task = bpe_zoo.skills[expert]
    base, own = bpe_scores["base", task].value, bpe_scores[expert, task].value
    assert own >= base + MARGIN, f"{expert} on {task}: {own:.2f} vs base {base:.2f}"


@pytest.mark.slow
def test_bpe_base_is_a_generalist(bpe_zoo, bpe_scores) -> None:
    base = base_scores(bpe_zoo, bpe_scores)
    assert sum(base.values()) / len(base) >= BASE_FLOOR, base
    assert max(base.values()) <= BASE_CEILING, base


@pytest.mark.slow
def test_merge_of_two_bpe_experts(bpe_zoo, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    cli("merge", "--method", "ties", "--base", "zoo-bpe:base", "--model", "zoo-bpe:add", "--model",
        "zoo-bpe:capital", "--out", str(out))
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.config.vocab_size == 384
    assert (out / "tokenizer.json").read_bytes() == (bpe_zoo.model("base") / "tokenizer.json").read_bytes()


@pytest.mark.slow
def test_char_expert_training_is_unchanged(tmp_path: Path) -> None:
    """Retraining one character expert through the family-parametrised ``fit`` reproduces the cached zoo's
    weights bit for bit (on the machine that built it: other CPUs give other weights by design)."""
    from study.identity import content_digest
    from study.machine import describe_machine
    from study.zoo import build_zoo
    from study.zoo.build import fit

    zoo = build_zoo(progress=False)
    if zoo.manifest["machine"] != describe_machine():
        pytest.skip("the cached character zoo was built on another machine")
    assert zoo.path.name == CHAR_DIR
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").symlink_to(zoo.model("base"), target_is_directory=True)
    fit(tmp_path, "llama", "sub")
    assert content_digest(tmp_path / "models" / "sub") == zoo.model_digest("sub")
