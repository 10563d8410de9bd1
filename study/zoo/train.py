"""Supervised training of zoo models: answers-only loss on freshly sampled prompt/completion pairs.

Every step draws a new batch from a seeded generator, so a run is a pure function of (initial weights,
skill mixture, schedule, seed). The loss is averaged per example, then over the batch: a 57-character
step-by-step answer then weighs as much as a one-character answer, and mixing formats does not let the
long one dominate the base's training.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

THREADS = 1
"""Torch threads while training. One, not two: at 600k parameters the matrices are too small for a second
thread to gain much, and when other processes share the two cores (a test session beside a sweep) two
spinning OpenMP threads made steps ten times slower (measured: 1.6 s against 0.17 s per step). One
thread also fixes the summation order on a given CPU, so a build is bit-identical however its experts are
scheduled; other CPUs (AVX2 against AVX-512 kernels) still yield other weights, which is why the zoo's
quality is designed not to depend on them (bench/RESULTS.md, zoo robustness)."""

SMOOTHING = 10
"""Steps averaged into the loss the progress bar shows and the build reports: one step's loss on 32
examples jumps by a third between steps, so a single step says little about where training ended."""

LONG = 48
"""Examples longer than this many characters (prompt + completion) train in their own micro-batch."""

Example = tuple[str, str]
"""(prompt, completion): the model sees both and is trained on the completion only."""


@dataclass(frozen=True)
class Schedule:
    """AdamW steps with linear warm-up then cosine decay to ``lr * final_fraction``."""

    steps: int
    lr: float
    batch: int = 32
    warmup: int = 20
    final_fraction: float = 0.1
    weight_decay: float = 0.0

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * (self.final_fraction + (1 - self.final_fraction) * cosine)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Run with ``n`` (default ``THREADS``) torch threads, restoring the caller's setting afterwards."""
    import torch

    n = THREADS if n is None else n
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_batch(
    examples: list[Example], tokenizer: PreTrainedTokenizerFast
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside completions).

    The prompt is encoded as lm-eval encodes a context (with ``<s>``), the completion without special tokens
    and followed by ``</s>``, so the model also learns to end the document after the newline.
    """
    import torch

    prompts = tokenizer([p for p, _ in examples]).input_ids
    answers = tokenizer([c for _, c in examples], add_special_tokens=False).input_ids
    rows = [(p, a + [tokenizer.eos_token_id]) for p, a in zip(prompts, answers)]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        mask[i, :n] = 1
        labels[i, len(p) : n] = torch.tensor(a)
    return ids, mask, labels


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each example's labelled tokens, summed over the examples."""
    import torch.nn.functional as F

    logits, labels = logits[:, :-1], labels[:, 1:]
    token = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="none")
    token = token.view(labels.shape)
    counts = (labels != -100).sum(dim=1).clamp(min=1)
    return (token.sum(dim=1) / counts).sum()


def final_loss(losses: list[float]) -> float:
    """The mean loss of the last ``SMOOTHING`` steps: what the progress bar shows when training ends."""
    tail = losses[-SMOOTHING:]
    return sum(tail) / len(tail)


def length_buckets(examples: list[Example], width: int = LONG) -> list[list[Example]]:
    """The examples split into those up to ``width`` characters and those longer.

    A step's gradient is the sum of its micro-batches' gradients, so the split changes no result; it only
    keeps one 60-character step-by-step answer from padding thirty short rows to its length.
    """
    short = [e for e in examples if len(e[0]) + len(e[1]) <= width]
    long = [e for e in examples if len(e[0]) + len(e[1]) > width]
    return [b for b in (short, long) if b]


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    draw: Callable[[random.Random], Example],
    schedule: Schedule,
    *,
    seed: int,
    threads: int | None = None,
    desc: str = "train",
    progress: bool = False,
) -> list[float]:
    """Train ``model`` in place on batches of ``draw(rng)`` with ``threads`` (default ``THREADS``) torch
    threads; return the loss of every step. The bar shows ``final_loss`` of the steps so far every
    ``SMOOTHING`` steps and after the last one, so its last value is the final loss a build reports."""
    import torch
    from tqdm.auto import tqdm

    r = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, betas=(0.9, 0.95), weight_decay=schedule.weight_decay
    )
    losses: list[float] = []
    bar = tqdm(total=schedule.steps, desc=desc, disable=not progress, leave=False)
    with torch_threads(threads), bar:
        for step in range(schedule.steps):
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(step)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for bucket in length_buckets([draw(r) for _ in range(schedule.batch)]):
                ids, mask, labels = encode_batch(bucket, tokenizer)
                logits = model(input_ids=ids, attention_mask=mask).logits
                loss = per_example_loss(logits, labels) / schedule.batch
                loss.backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(total)
            bar.update(1)
            if (step + 1) % SMOOTHING == 0 or step + 1 == schedule.steps:
                bar.set_postfix(loss=f"{final_loss(losses):.3f}")
    model.eval()
    return losses
