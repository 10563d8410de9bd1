"""Teachers with another vocabulary: their tokens mapped onto the target's, their positions onto the target's.

FuseLLM (Wan et al. 2024, arXiv:2401.10491, section 3.3) aligns two tokenisations of the same text by dynamic
programming over the token strings with the edit distance as cost, and maps each of a teacher's top-K tokens
to the target token of minimum edit distance; we do both here in our own code:

- ``VocabMap``: teacher id → target id, an exact string match first, else the target token at minimum edit
  distance; among equals the one sharing the longest prefix with the teacher token (``Ġletter`` onto a
  character vocabulary is `` ``, where the text goes on, not ``e``), then the smaller id. Computed once per
  teacher token and remembered.
- ``align``: a monotone path through the two token sequences, every token of either side matched to at least
  one of the other. FuseLLM's dynamic time warping (steps (1,1), (1,0), (0,1), cost the edit distance of the
  two strings; ties prefer the diagonal) where the two token strings spell different texts (unknown tokens,
  byte fallbacks, normalisation). Where they spell the same text, as two tokenisations of one corpus text
  usually do, the pairs whose character spans overlap: the alignment DTW approximates, without its failure of
  matching ``c`` to ``bc`` in ``ab|c`` against ``a|bc`` because the two strings are close.
- ``to_target``: a teacher's per-position top-K onto the target's positions. The target token that starts a
  teacher token's span gets that teacher prediction (mapped); a target token inside the span of one teacher
  token (1 : n) gets a one-hot on the gold token, since the teacher predicted no such piece; a target token that
  spans several teacher tokens (n : 1) gets the prediction of the first of them, the one that starts its text.

Token strings are the tokenizer's own spelling with the SentencePiece and byte-level space markers (``▁``,
``Ġ``) and newline marker (``Ċ``) read as the characters they stand for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MARKERS = {"▁": " ", "Ġ": " ", "Ċ": "\n", "ĉ": "\t"}


def normalise(token: str) -> str:
    for marker, char in MARKERS.items():
        token = token.replace(marker, char)
    return token


def token_strings(tokenizer: Any) -> list[str]:
    """Every id's surface string (``normalise``d), index = id."""
    return [normalise(t or "") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]


@lru_cache(maxsize=1 << 16)
def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute: 1 each)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class VocabMap:
    """Teacher token id → target token id by string (exact, else minimum edit distance; smaller id on ties)."""

    source: list[str]
    target: list[str]
    skip: frozenset[int] = frozenset()
    """Target ids never mapped to (special tokens: ``<pad>`` is no answer to any text)."""
    _exact: dict[str, int] = field(default_factory=dict, init=False)
    _memo: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.target):
            if i not in self.skip:
                self._exact.setdefault(s, i)

    @property
    def identity(self) -> bool:
        return self.source == self.target

    def __call__(self, source_id: int) -> int:
        if source_id not in self._memo:
            s = self.source[source_id]
            hit = self._exact.get(s)
            if hit is None:
                hit = min((edit_distance(s, t), -_common_prefix(s, t), i)
                          for i, t in enumerate(self.target) if i not in self.skip)[2]
            self._memo[source_id] = hit
        return self._memo[source_id]


def align(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """A monotone path of index pairs (i, j) from (0, 0) to (len(a)-1, len(b)-1) covering both sequences: by
    character spans when ``a`` and ``b`` spell one text, else by dynamic time warping (``dtw``)."""
    if not a or not b:
        return []
    if "".join(a) == "".join(b):
        return _by_spans(a, b)
    return dtw(a, b)


def _by_spans(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Pairs of tokens whose character spans overlap (an empty token pairs with the token it sits in)."""
    ends_a, ends_b, pos = [], [], 0
    for t in a:
        pos += len(t)
        ends_a.append(pos)
    pos = 0
    for t in b:
        pos += len(t)
        ends_b.append(pos)
    path, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        path.append((i, j))
        if ends_a[i] == ends_b[j]:
            i, j = i + 1, j + 1
        elif ends_a[i] < ends_b[j]:
            i += 1
        else:
            j += 1
    path += [(x, len(b) - 1) for x in range(i, len(a))] + [(len(a) - 1, y) for y in range(j, len(b))]
    return path


def dtw(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """FuseLLM's alignment: the minimum-cost monotone path, cost the edit distance of the paired strings."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return []
    inf = float("inf")
    cost = [[inf] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            d = edit_distance(a[i], b[j])
            if i == 0 and j == 0:
                cost[i][j] = d
                continue
            best = min(cost[i - 1][j - 1] if i and j else inf, cost[i - 1][j] if i else inf,
                       cost[i][j - 1] if j else inf)
            cost[i][j] = d + best
    path, i, j = [(n - 1, m - 1)], n - 1, m - 1
    while i or j:
        steps = [(cost[i - 1][j - 1], i - 1, j - 1)] if i and j else []
        steps += [(cost[i - 1][j], i - 1, j)] if i else []
        steps += [(cost[i][j - 1], i, j - 1)] if j else []
        _, i, j = min(steps, key=lambda s: s[0])  # min keeps the first of equals: the diagonal
        path.append((i, j))
    return path[::-1]


def to_target(teacher_tokens: list[int], top_ids: Any, top_logprobs: Any, gold: Any, target_tokens: list[int],
              vocab: VocabMap, teacher_special: frozenset[int], target_special: frozenset[int]
              ) -> tuple[Any, Any, Any]:
    """A teacher's predictions on one text as rows of the target's predictions on the same text.

    Teacher row r predicts teacher token r + 1 (``top_ids``/``top_logprobs`` [n-1, K], ``gold`` [n-1] its
    log-probability of that token); the result's row r predicts target token r + 1: ``ids``/``logprobs``
    [m-1, K] in target ids and ``gold_ce`` [m-1], the teacher's cross-entropy there (0 for a one-hot row).
    """
    import torch

    m, kk = len(target_tokens), top_ids.shape[-1]
    if vocab.identity and teacher_tokens == target_tokens:
        return top_ids.long(), top_logprobs.float(), -gold.float()
    ids = torch.zeros((max(m - 1, 0), kk), dtype=torch.long)
    logprobs = torch.full((max(m - 1, 0), kk), float("-inf"))
    gold_ce = torch.zeros(max(m - 1, 0))
    ids[:, 0] = torch.tensor(target_tokens[1:], dtype=torch.long)
    logprobs[:, 0] = 0.0  # one-hot on the gold token unless a teacher prediction replaces it below
    tpos = [p for p, t in enumerate(teacher_tokens) if t not in teacher_special]
    ypos = [q for q, t in enumerate(target_tokens) if t not in target_special]
    path = align([vocab.source[teacher_tokens[p]] for p in tpos], [vocab.target[target_tokens[q]] for q in ypos])
    first_target_of: dict[int, int] = {}
    first_teacher_of: dict[int, int] = {}
    for i, j in path:
        first_target_of.setdefault(i, j)
        first_teacher_of.setdefault(j, i)
    mapped = top_ids.clone().apply_(vocab) if hasattr(top_ids, "apply_") else top_ids
    for j, i in first_teacher_of.items():
        p, q = tpos[i], ypos[j]
        if first_target_of[i] != j or p == 0 or q == 0:
            continue  # inside a teacher token's span, or no prediction of it on either side: one-hot
        ids[q - 1] = mapped[p - 1].long()
        logprobs[q - 1] = top_logprobs[p - 1].float()
        gold_ce[q - 1] = -float(gold[p - 1])
    return ids, logprobs, gold_ce
