"""The zoo's tokenizer: one token per character, as a real ``tokenizers`` tokenizer.

A character vocabulary keeps the embedding small (~80 rows) and makes every synthetic skill learnable by a
600k-parameter model; wrapping it in ``PreTrainedTokenizerFast`` keeps the rest of the stack (lm-eval, merge
tools, ``AutoTokenizer``) on the same code path as a real checkpoint. Like Llama's tokenizer it prepends
``<s>`` on ``encode``; lm-eval 0.4.13 keeps the tokenizer's default, so evaluation prompts start with ``<s>``
exactly as the training sequences do.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARACTERS = string.digits + string.ascii_lowercase + string.ascii_uppercase + " \n.,:;?!+-*=/()'%#"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}Q: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}A: {{ message['content'] }}\n{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}"
)
"""Renders a user turn ``q`` as the training prompt ``<s>Q: q\\nA:`` and an answer as `` a\\n</s>``.

So ``apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)`` is exactly what
lm-eval sends with ``apply_chat_template=False`` for the same question, and chat-mode evaluation scores the
same model behaviour.
"""


def vocabulary() -> dict[str, int]:
    """Token -> id: the four special tokens first (pad = 0), then the characters in a fixed order."""
    return {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A ``WordLevel`` model over single characters: the pre-tokenizer isolates every character, ``Fuse``
    joins them back on decode, and a template post-processor prepends ``<s>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return as_transformers_tokenizer(tok)


def as_transformers_tokenizer(tok: Any) -> PreTrainedTokenizerFast:
    """A ``tokenizers.Tokenizer`` as the zoo's Hugging Face tokenizer: its special tokens, chat template and
    settings, the same for every zoo family (char and bpe), so lm-eval and training treat them alike."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
