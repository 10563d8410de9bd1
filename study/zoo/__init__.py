"""The mini zoo: a small Llama (or Qwen3) base trained here from scratch, its task experts, and lm-eval tasks.

It is the harness's default model family, so every command runs with no hub access. Importing this package
does not import torch; ``build_zoo`` does, when there is something to train.

Modules: ``tokenizer`` (character tokenizer, chat template), ``bpe`` (the bpe family's byte-level BPE
tokenizer), ``family`` (zoo families: char, the default, and bpe), ``skills`` (synthetic skills and answer
formats), ``model`` (shapes and configs), ``train`` (answers-only training loop), ``tasks`` (lm-eval task
configs and documents), ``spec`` (the constants and the content hash), ``catalog`` (the ``Zoo`` a build
yields), ``names`` (how models and tasks are spelled: ``zoo:add``), ``build`` (the cached build), ``tiny``
(seconds-fast families for unit tests).
"""

from __future__ import annotations

from pathlib import Path

from study.zoo.catalog import Zoo, default_zoo_root, load_zoo, zoo_summary


def build_zoo(
    root: Path | None = None, *, arch: str = "llama", family: str = "char", progress: bool = True
) -> Zoo:
    """The complete zoo of ``arch`` and ``family`` (``char``, the default, or ``bpe``) under ``root``: returned
    at once when built, trained first otherwise."""
    from study.zoo.build import build_zoo as _build_zoo

    return _build_zoo(root, arch=arch, family=family, progress=progress)


__all__ = ["Zoo", "build_zoo", "default_zoo_root", "load_zoo", "zoo_summary"]
