"""Tiny model families for unit tests: a base and genuinely different fine-tuned checkpoints in seconds.

Tests of merge methods need real Hugging Face directories (config, safetensors, tokenizer) of both
architectures, whose checkpoints differ from the base the way fine-tunes do: every checkpoint is a few AdamW
steps of the base on a different zoo skill, so task vectors are small, dense and distinct (rows of characters
a skill never uses stay exactly at the base's values, as in real fine-tunes). Not trained to competence:
for scores, use the mini zoo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study.zoo.model import Shape, check_arch
from study.zoo.skills import SKILLS, digest, drawer, mixture

TINY_SHAPE = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)
BASE_STEPS, BASE_LR = 30, 3e-3
CHECKPOINT_STEPS, CHECKPOINT_LR = 12, 5e-4
"""A checkpoint moves its weights by ~10% of their size: far enough to differ in every tensor, near enough
to the base for task vectors to be small, as fine-tunes are."""


@dataclass(frozen=True)
class TinyFamily:
    """A base directory and its fine-tuned checkpoints (``skills[i]`` is what ``checkpoints[i]`` learned)."""

    base: Path
    checkpoints: list[Path]
    skills: list[str] = field(default_factory=list)
    arch: str = "llama"
    tokenizer: str = "char"


def make_tiny_family(
    out_dir: Path | str,
    arch: str = "llama",
    n_checkpoints: int = 3,
    seed: int = 0,
    *,
    tied: bool = False,
    dtype: str = "float32",
    tokenizer: str = "char",
) -> TinyFamily:
    """Save a tiny base (``out_dir/base``) and ``n_checkpoints`` fine-tunes (``out_dir/ckpt-<i>-<skill>``).

    Deterministic in (``arch``, ``n_checkpoints``, ``seed``, ``tied``, ``dtype``). Checkpoint ``i`` trains on
    skill ``i`` modulo the number of skills, with its own seed, so even ``n_checkpoints`` > 9 are distinct.
    ``dtype`` is the stored dtype (training is fp32); ``tied`` ties ``lm_head`` to the embedding.
    ``tokenizer`` is a zoo family's (``char`` or ``bpe``, ``study.zoo.family``): a ``bpe`` tiny family has the
    bpe zoo's vocabulary, for tests of cross-tokenizer methods against a ``char`` one.
    """
    import copy

    from study.zoo.family import get_family
    from study.zoo.model import init_model, save_model
    from study.zoo.train import Schedule, train

    check_arch(arch)
    tok = get_family(tokenizer).build_tokenizer()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = Shape(**{**TINY_SHAPE.as_dict(), "tied": tied})
    base = init_model(shape, arch, tok, seed=digest("tiny-init", arch, seed) % 2**31)
    names = list(SKILLS)
    schedule = Schedule(BASE_STEPS, BASE_LR, batch=16, warmup=5)
    train(base, tok, mixture(dict.fromkeys(names, 1.0), 0.5), schedule, seed=seed)
    save_model(base, tok, out / "base", dtype)
    checkpoints, skills = [], []
    for i in range(n_checkpoints):
        skill = names[i % len(names)]
        model = copy.deepcopy(base)
        schedule = Schedule(CHECKPOINT_STEPS, CHECKPOINT_LR, batch=16, warmup=2)
        train(model, tok, drawer(skill), schedule, seed=digest("tiny-ckpt", arch, seed, i) % 2**31)
        path = out / f"ckpt-{i}-{skill}"
        save_model(model, tok, path, dtype)
        checkpoints.append(path)
        skills.append(skill)
    return TinyFamily(base=out / "base", checkpoints=checkpoints, skills=skills, arch=arch, tokenizer=tokenizer)
