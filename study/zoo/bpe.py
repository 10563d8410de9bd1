"""The bpe family's tokenizer: byte-level BPE trained here, deterministically, on text the skills generate.

A second tokenizer over the same skills is what cross-tokenizer methods (knowledge fusion) need to run for
real: the bpe family's vocabulary, token boundaries and embedding rows differ from the character zoo's, while
its tasks, prompts and answers are the same strings. Byte-level (GPT-2's pre-tokenizer and byte alphabet) as
in Llama 3 and Qwen: merges never cross a pre-token boundary, and ``Q: ...\\nA:`` ends on one before the
answer's leading space, so a prompt's tokens are a prefix of prompt-plus-answer's (lm-eval's
``_encode_pair`` relies on that, and training encodes prompt and answer separately).

The corpus is a fixed draw from a fixed generator and the trainer breaks ties by pair order, so two builds
give the same ``tokenizer.json`` (tested); ``spec`` hashes the corpus and the settings into the directory name.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import TYPE_CHECKING, Any

from study.zoo.skills import SKILLS, mixture, rng
from study.zoo.tokenizer import BOS, SPECIAL_TOKENS, as_transformers_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 384
"""Specials (4), the 256 byte symbols, and 124 merges: enough to merge the skills' words (``letter``,
``capital``, objects, ``Ġanswer``) and frequent pairs of random letters, few enough that the embedding stays
small (384 x 128 per table) and every merged token is seen often in training."""
CORPUS_SIZE = 4000
"""Examples (prompt + answer) in the training corpus: every skill equally, half of ``add`` step by step."""
MIN_FREQUENCY = 2


@cache
def corpus() -> tuple[str, ...]:
    """The tokenizer's training text: ``CORPUS_SIZE`` training examples of every skill, fixed by a digest seed.

    Drawn like training data (evaluation questions of open skills excluded), so the tokenizer never sees a
    held-out question either."""
    draw, r = mixture(dict.fromkeys(SKILLS, 1.0), steps_share=0.5), rng("bpe-corpus")
    return tuple(p + c for p, c in (draw(r) for _ in range(CORPUS_SIZE)))


def spec() -> dict[str, Any]:
    """What determines the tokenizer, as JSON-able data (part of the bpe family's spec hash)."""
    return {
        "kind": "byte_level_bpe",
        "vocab_size": VOCAB_SIZE,
        "min_frequency": MIN_FREQUENCY,
        "special_tokens": list(SPECIAL_TOKENS),
        "corpus_sha256": hashlib.sha256("\x1e".join(corpus()).encode()).hexdigest(),
    }


def build_bpe_tokenizer() -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on ``corpus()`` and wrap it like the character tokenizer: same special tokens
    at the same ids (``<pad>`` = 0), ``<s>`` prepended on ``encode``, same chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=MIN_FREQUENCY,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer, length=len(corpus()))
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos)]
    )
    return as_transformers_tokenizer(tok)
