"""Training the target on the fused distributions: (1 - λ) · LM cross-entropy + λ · cross-entropy to the fusion.

FuseLLM's objective (arXiv:2401.10491, eq. 5) mixes the causal LM loss on the corpus with the divergence to
the fused distribution; the cross-entropy to a fixed target distribution differs from the KL divergence by that
distribution's entropy, a constant, so its gradient is the same and we use it. Both terms are averaged over the
batch's predicted tokens (every token after the first of each text). The fused distribution is sparse (ids,
probabilities per position), so the second term is a gather, never a dense vocabulary-sized target.

A run is a pure function of (initial weights, fused corpus, parameters, device): batch b of step s is drawn by a
generator seeded from (seed, s) alone, AdamW runs with no weight decay, and on CPU a model under
``SMALL_MODEL_PARAMS`` trains on one thread (``study.zoo.train.THREADS``: a fixed summation order), so the same
cell trains to the same bits on one machine. A checkpoint of the step, model and optimizer state is written every
``checkpoint_every`` steps when a path is given; a run started again from it continues where it stopped and ends
with the weights an uninterrupted run ends with.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.checkpoints import digest


@dataclass(frozen=True)
class FusedSequence:
    """One corpus text in the target's tokens, with the fused distribution predicting each token after the first."""

    tokens: list[int]
    ids: Any
    """[n-1, M] long: fused distribution's target ids per row (row r predicts token r + 1; padding id 0)."""
    probs: Any
    """[n-1, M] float32: their probabilities (each row sums to 1; padding 0)."""


@dataclass(frozen=True)
class TrainResult:
    losses: list[float]
    tokens: int
    """Predicted tokens the target trained on (steps x batch, padding excluded): the cell's training budget."""
    seconds: float
    resumed_from: int
    """The step a checkpoint resumed from (0: none)."""


def schedule_lr(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first 10% of steps, then cosine to 10% of ``lr`` (the zoo's schedule)."""
    from study.zoo.train import Schedule

    return Schedule(steps=steps, lr=lr, warmup=max(1, steps // 10), final_fraction=0.1).lr_at(step)


def batch_indices(seed: int, step: int, n: int, batch: int) -> list[int]:
    """The texts of one step: seeded by (seed, step) only, so a resumed run draws what an unbroken run draws."""
    r = random.Random(int(digest("fusion-batch", seed, step)[:16], 16))
    return [r.randrange(n) for _ in range(batch)]


def _collate(seqs: list[FusedSequence], pad: int) -> tuple[Any, Any, Any, Any, Any]:
    import torch

    width = max(len(s.tokens) for s in seqs)
    m = max(s.ids.shape[-1] for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full((len(seqs), width - 1), -100, dtype=torch.long)
    fid = torch.zeros((len(seqs), width - 1, m), dtype=torch.long)
    fp = torch.zeros((len(seqs), width - 1, m))
    for i, s in enumerate(seqs):
        n = len(s.tokens)
        ids[i, :n] = torch.tensor(s.tokens)
        mask[i, :n] = 1
        labels[i, :n - 1] = ids[i, 1:n]
        fid[i, :n - 1, :s.ids.shape[-1]] = s.ids
        fp[i, :n - 1, :s.probs.shape[-1]] = s.probs
    return ids, mask, labels, fid, fp


def train_target(model: Any, corpus: list[FusedSequence], *, steps: int, lr: float, lambda_: float, batch: int,
                 seed: int, pad: int, device: str = "cpu", checkpoint: Path | None = None,
                 checkpoint_every: int = 50) -> TrainResult:
    """Train ``model`` in place for ``steps`` AdamW steps; see the module docstring for the loss."""
    import torch

    from study.evaluate import SMALL_MODEL_PARAMS
    from study.zoo.train import torch_threads

    if not corpus:
        raise ValueError("the fusion corpus is empty")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start, tokens, losses = 0, 0, []
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, tokens, losses = state["step"], state["tokens"], list(state["losses"])
    small = device == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    t0 = time.perf_counter()
    with torch_threads(1 if small else torch.get_num_threads()):
        for step in range(start, steps):
            torch.manual_seed(int(digest("fusion-step", seed, step)[:8], 16))
            ids, mask, labels, fid, fp = (t.to(device) for t in
                                          _collate([corpus[i] for i in batch_indices(seed, step, len(corpus), batch)],
                                                   pad))
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
            valid = labels != -100
            lm = -logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0]
            kd = -(logp.gather(-1, fid) * fp).sum(-1)
            per_token = (1 - lambda_) * lm + lambda_ * kd
            loss = per_token[valid].mean()
            for group in opt.param_groups:
                group["lr"] = schedule_lr(step, steps, lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            tokens += int(valid.sum())
            if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                _save(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                                   "tokens": tokens, "losses": losses})
    model.eval()
    return TrainResult(losses, tokens, time.perf_counter() - t0, start)


def _save(path: Path, state: dict[str, Any]) -> None:
    """Written under a temporary name and renamed: a kill mid-write leaves the previous checkpoint intact."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
