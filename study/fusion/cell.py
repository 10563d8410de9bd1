"""One fusion cell, start to end: corpus → teachers' top-K (cached) → alignment → fusion → training → weights.

``fuse_and_train`` knows no sweep: teachers and target are given as loaders, so it runs teachers of another
architecture or tokenizer as well (``study.fusion.align`` maps them onto the target). ``CellRunner`` calls it
for ``fusion:<method>`` cells with the subset's checkpoints as teachers (``study.runner``); the trained state
dict is then scored like any cell's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from study.fusion.cost import FusionCost
from study.fusion.schema import FusionInfo
from study.statistics.spec import CalibrationSpec


@dataclass(frozen=True)
class Teacher:
    """A teacher by content identity, with loaders (the model is loaded only when its cache is missing)."""

    identity: str
    load_model: Callable[[], tuple[Any, Any]]
    """() -> (model, tokenizer)"""
    load_tokenizer: Callable[[], Any]


def fuse_corpus(texts: list[str], max_tokens: int, tokenizer: Any, teachers: list[Any], teacher_tokenizers: list[Any],
                info: FusionInfo, params: dict[str, Any]) -> tuple[list[Any], bool]:
    """The fused distribution on every text in the target's tokens; and whether any vocabulary was aligned."""
    import torch

    from study.fusion.align import VocabMap, to_target, token_strings
    from study.fusion.train import FusedSequence

    target_strings = token_strings(tokenizer)
    skip = frozenset({tokenizer.pad_token_id} - {None})
    maps, specials = [], []
    for tt in teacher_tokenizers:
        strings = target_strings if tt is tokenizer else token_strings(tt)
        maps.append(VocabMap(strings, target_strings, skip))
        specials.append(frozenset(tt.all_special_ids))
    target_special = frozenset(tokenizer.all_special_ids)
    streams = [d.sequences() for d in teachers]
    rows: list[list[tuple[Any, Any, Any]]] = [[] for _ in teachers]
    seqs_tokens = []
    for text in texts:
        target_tokens = tokenizer(text, truncation=True, max_length=max_tokens).input_ids
        seqs_tokens.append(target_tokens)
        for i, stream in enumerate(streams):
            seq = next(stream)
            rows[i].append(to_target(seq.tokens, seq.ids, seq.logprobs, seq.gold, target_tokens, maps[i],
                                     specials[i], target_special))
    width = max(r[0].shape[-1] for per in rows for r in per)

    def stacked(j: int, fill: float | int) -> Any:
        out = []
        for per in rows:
            parts = [r[j] for r in per]
            if j < 2:
                parts = [torch.nn.functional.pad(p, (0, width - p.shape[-1]), value=fill) for p in parts]
            out.append(torch.cat(parts))
        return torch.stack(out)

    ids, logprobs, gold_ce = stacked(0, 0), stacked(1, float("-inf")), stacked(2, 0.0)
    fid, fp = info.fn(logprobs, ids, gold_ce, **info.method_kwargs(params))
    fused, row = [], 0
    for tokens in seqs_tokens:
        n = len(tokens) - 1
        fused.append(FusedSequence(tokens, fid[row:row + n], fp[row:row + n].float()))
        row += n
    return fused, any(not m.identity for m in maps)


def fuse_and_train(info: FusionInfo, params: dict[str, Any], corpus: CalibrationSpec, teachers: list[Teacher],
                   load_target: Callable[[], tuple[Any, Any]], *, cache_dir: Path, device: str = "cpu",
                   evaluated: set[str] | None = None, checkpoint: Path | None = None) -> tuple[dict[str, Any], FusionCost]:
    """Train the target on the teachers' fused distributions; its state dict (on CPU) and the cell's cost.

    ``params`` are resolved (``FusionInfo.resolve_params``). ``evaluated`` are the prompts of the documents the
    sweep scores: a corpus text containing one is an error (``study.fusion.corpus.check_not_evaluated``).
    """
    from study.fusion import distributions
    from study.fusion.corpus import allowed_prompts, check_not_evaluated, corpus_digest, corpus_texts
    from study.fusion.train import train_target

    texts = corpus_texts(corpus)
    if evaluated:
        check_not_evaluated(texts, evaluated, allowed_prompts(corpus))
    digest = corpus_digest(texts, corpus.max_tokens)
    dists = [distributions.ensure(t.identity, t.load_model, texts, digest, corpus.max_tokens, params["top_k"],
                                  cache_dir, device) for t in teachers]
    t1 = time.perf_counter()
    model, tokenizer = load_target()
    fused, crossed = fuse_corpus(texts, corpus.max_tokens, tokenizer, dists, [t.load_tokenizer() for t in teachers],
                                 info, params)
    t2 = time.perf_counter()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = train_target(model, fused, steps=params["steps"], lr=params["lr"], lambda_=params["lambda"],
                          batch=params["batch"], seed=params["seed"], pad=pad, device=device, checkpoint=checkpoint)
    state = {n: t.detach().to("cpu") for n, t in model.state_dict().items()}
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    cost = FusionCost(teachers=len(teachers), corpus_sequences=len(texts), corpus_digest=digest,
                      teacher_tokens=sum(d.tokens for d in dists), teachers_cached=sum(d.cached for d in dists),
                      teacher_seconds=round(sum(0.0 if d.cached else d.seconds for d in dists), 3),
                      align_fuse_seconds=round(t2 - t1, 3), train_steps=params["steps"], train_tokens=result.tokens,
                      train_seconds=round(result.seconds, 3), resumed_from_step=result.resumed_from, device=device,
                      cross_tokenizer=crossed)
    return state, cost
