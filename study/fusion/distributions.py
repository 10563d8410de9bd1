"""Teachers' next-token distributions on the fusion corpus: top-K per position, computed once, kept on disk.

A teacher's file set is keyed by the teacher's content identity, the corpus digest (its texts and token limit),
K, this module's version and the device kind, so every fusion cell of a sweep that names the teacher, whatever
its subset, method or training parameters, reads the same cache, and a changed checkpoint or corpus recomputes
it. It is written as it is computed, one chunk of ``CHUNK`` sequences per safetensors file, into a temporary
directory renamed into place when complete: a killed run leaves no partial cache (its temporary directory is
removed by the next run on this host once its process is dead), and memory holds one chunk's logits at a time.
Reading is streamed the same way, one chunk at a time.

Per sequence of n tokens (the teacher's tokenisation, special tokens included) a chunk holds the tokens and,
for rows r = 0..n-2 (row r predicts token r + 1), the K most probable ids, their log-probabilities under the
full softmax, and the log-probability of the actual next token.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

DISTRIBUTION_VERSION = 1
CHUNK = 64
LOGIT_BUDGET = 1 << 27
"""Logit entries (float32) of one forward micro-batch: 512 MiB, so a 128k-vocabulary model over 2k-token texts
runs one text at a time and the zoo's 80-symbol vocabulary a whole chunk at once."""
META = "meta.json"


@dataclass(frozen=True)
class TeacherSequence:
    """One corpus text as a teacher saw it."""

    tokens: list[int]
    ids: Any
    """[n-1, K] int: the teacher's top-K token ids at each row."""
    logprobs: Any
    """[n-1, K] float32: their log-probabilities (full softmax)."""
    gold: Any
    """[n-1] float32: the log-probability of the token that follows."""


@dataclass(frozen=True)
class TeacherDistributions:
    """A complete cache on disk; ``sequences()`` streams it."""

    path: Path
    tokens: int
    """Tokens the teacher ran over (its forward-pass cost)."""
    seconds: float
    """Seconds the computation took when it ran (0 is never written: a cached read says ``cached``)."""
    cached: bool

    def sequences(self) -> Iterator[TeacherSequence]:
        from safetensors import safe_open

        for chunk in sorted(self.path.glob("chunk-*.safetensors")):
            with safe_open(str(chunk), framework="pt") as f:
                tokens, offsets = f.get_tensor("tokens"), f.get_tensor("offsets")
                ids, logprobs, gold = f.get_tensor("ids"), f.get_tensor("logprobs"), f.get_tensor("gold")
            row = 0
            for s in range(len(offsets) - 1):
                seq = tokens[offsets[s]:offsets[s + 1]].tolist()
                n = len(seq) - 1
                yield TeacherSequence(seq, ids[row:row + n], logprobs[row:row + n], gold[row:row + n])
                row += n


def distributions_key(teacher: str, corpus: str, top_k: int, device: str) -> str:
    payload = {"version": DISTRIBUTION_VERSION, "teacher": teacher, "corpus": corpus, "top_k": top_k,
               "device": device.split(":")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def ensure(teacher: str, load: Callable[[], tuple[Any, Any]], texts: list[str], corpus: str, max_tokens: int,
           top_k: int, root: Path, device: str = "cpu") -> TeacherDistributions:
    """The teacher's distributions on ``texts`` (digest ``corpus``), computed by ``load()``'s model if absent."""
    key = distributions_key(teacher, corpus, top_k, device)
    path = Path(root) / key[:2] / key
    if (path / META).is_file():
        meta = json.loads((path / META).read_text())
        return TeacherDistributions(path, int(meta["tokens"]), float(meta["seconds"]), True)
    _remove_dead_temporaries(path.parent)
    tmp = path.with_name(f".{key}.{socket.gethostname()}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        model, tokenizer = load()
        tokens = _write_chunks(model, tokenizer, texts, max_tokens, top_k, tmp, device)
        seconds = time.perf_counter() - t0
        meta = {"teacher": teacher, "corpus": corpus, "top_k": top_k, "sequences": len(texts), "tokens": tokens,
                "seconds": round(seconds, 3), "device": device, "version": DISTRIBUTION_VERSION}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, path)
        except OSError:  # another worker completed it first: both are the same computation
            if not (path / META).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return TeacherDistributions(path, tokens, seconds, False)


def _write_chunks(model: Any, tokenizer: Any, texts: list[str], max_tokens: int, top_k: int, out: Path,
                  device: str) -> int:
    import torch
    from safetensors.torch import save_file

    from study.evaluate import SMALL_MODEL_PARAMS
    from study.zoo.train import torch_threads

    model.to(device).eval()
    small = device == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vocab = model.get_output_embeddings().weight.shape[0]
    total = 0
    with torch_threads(1 if small else torch.get_num_threads()), torch.no_grad():
        for c, start in enumerate(range(0, len(texts), CHUNK)):
            encoded = [tokenizer(t, truncation=True, max_length=max_tokens).input_ids
                       for t in texts[start:start + CHUNK]]
            width = max(len(e) for e in encoded)
            micro = max(1, LOGIT_BUDGET // (width * vocab))
            rows = []
            for m0 in range(0, len(encoded), micro):
                rows += _top_rows(model, encoded[m0:m0 + micro], width, pad, top_k, device)
            flat = [t for e in encoded for t in e]
            offsets = [0]
            for e in encoded:
                offsets.append(offsets[-1] + len(e))
            save_file({"tokens": torch.tensor(flat, dtype=torch.long), "offsets": torch.tensor(offsets),
                       "ids": torch.cat([r[0] for r in rows]).to(torch.int32).cpu().contiguous(),
                       "logprobs": torch.cat([r[1] for r in rows]).cpu().contiguous(),
                       "gold": torch.cat([r[2] for r in rows]).cpu().contiguous()},
                      str(out / f"chunk-{c:05d}.safetensors"))
            total += len(flat)
    return total


def _top_rows(model: Any, encoded: list[list[int]], width: int, pad: int, top_k: int, device: str) -> list[Any]:
    """One forward pass over a micro-batch: per sequence, (top-K ids, their log-probabilities, gold log-prob)."""
    import torch

    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, :len(e)] = torch.tensor(e)
        mask[i, :len(e)] = 1
    ids, mask = ids.to(device), mask.to(device)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    top = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
    gold = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    return [(top.indices[i, :len(e) - 1], top.values[i, :len(e) - 1], gold[i, :len(e) - 1])
            for i, e in enumerate(encoded)]


def _remove_dead_temporaries(where: Path) -> None:
    """Temporary directories of killed runs on this host (``.KEY.HOST.PID.NS.tmp``, PID dead)."""
    from study.store import _pid_alive

    if not where.is_dir():
        return
    host = socket.gethostname()
    for tmp in where.glob(".*.tmp"):
        parts = tmp.name.rsplit(".", 4)
        if len(parts) == 5 and parts[1] == host and parts[2].isdigit() and not _pid_alive(int(parts[2])):
            shutil.rmtree(tmp, ignore_errors=True)
