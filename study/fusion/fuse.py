"""The built-in fusion methods: how k teachers' next-token distributions become one training target.

Each is a pure tensor function (``study.fusion.schema.fusion_method``) over N target positions. Teachers
arrive as their top-K log-probabilities in the target's vocabulary (``study.fusion.align`` mapped them), each
teacher's row renormalised over its K entries before fusing, so what a teacher says outside its top-K never
enters (FuseLLM and InfiFusion both distil from truncated distributions). Every output row sums to 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from study.fusion.schema import fusion_method

if TYPE_CHECKING:
    from torch import Tensor


def renormalised(logprobs: Tensor) -> Tensor:
    """Each row's top-K as a distribution over its entries (``-inf`` padding gets 0)."""
    import torch

    return torch.softmax(logprobs.float(), dim=-1)


def sparse_union(ids: Tensor, probs: Tensor, keep: int | None = None) -> tuple[Tensor, Tensor]:
    """Rows of (id, probability) pairs with repeated ids summed, sorted by probability (highest first);
    ``keep`` truncates each row to its ``keep`` most probable ids and renormalises. Padding: id 0, prob 0."""
    import torch

    order = ids.argsort(dim=-1, stable=True)
    sid, sp = ids.gather(-1, order), probs.gather(-1, order)
    first = torch.ones_like(sid, dtype=torch.bool)
    first[..., 1:] = sid[..., 1:] != sid[..., :-1]
    group = first.long().cumsum(-1) - 1
    out_p = torch.zeros_like(sp).scatter_add_(-1, group, sp)
    out_id = torch.zeros_like(sid).scatter_(-1, group, sid)
    out_id = torch.where(out_p > 0, out_id, torch.zeros_like(out_id))
    rank = out_p.argsort(dim=-1, descending=True, stable=True)
    out_id, out_p = out_id.gather(-1, rank), out_p.gather(-1, rank)
    if keep is not None and keep < out_p.shape[-1]:
        out_id, out_p = out_id[..., :keep], out_p[..., :keep]
        out_p = out_p / out_p.sum(-1, keepdim=True).clamp_min(1e-30)
    return out_id, out_p


def _flat(ids: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
    """[k, N, K] per teacher → [N, k·K] (every teacher's entries side by side)."""
    k, n, kk = ids.shape
    return ids.permute(1, 0, 2).reshape(n, k * kk), probs.permute(1, 0, 2).reshape(n, k * kk)


@fusion_method("min_ce", reference="Wan et al. 2024, Knowledge Fusion of Large Language Models (FuseLLM), "
                                   "arXiv:2401.10491, MinCE", version=1)
def min_ce(logprobs: Tensor, ids: Tensor, gold_ce: Tensor) -> tuple[Tensor, Tensor]:
    """At each position the distribution of the teacher with the lowest cross-entropy on the gold token.

    FuseLLM's MinCE chooses per sequence; we choose per token (issue #22), so a teacher that knows one skill
    teaches the tokens of that skill even inside a sequence another teacher predicts better on average.
    Ties go to the first teacher of the subset.
    """
    import torch

    choice = gold_ce.argmin(dim=0)
    rows = torch.arange(ids.shape[1])
    return sparse_union(ids[choice, rows], renormalised(logprobs[choice, rows]))


@fusion_method("avg", reference="the unweighted mean of the teachers' distributions (FuseLLM's AvgCE weights "
                                "it by the teachers' cross-entropies, arXiv:2401.10491)", version=1)
def avg(logprobs: Tensor, ids: Tensor, gold_ce: Tensor) -> tuple[Tensor, Tensor]:
    """The mean of the k teachers' renormalised top-K distributions (the output ensemble, truncated)."""
    fid, fp = _flat(ids, renormalised(logprobs) / ids.shape[0])
    return sparse_union(fid, fp)


@fusion_method("infifusion_topk", reference="Yan et al. 2025, InfiFusion, arXiv:2501.02795: Top-K selection "
                                            "and logits standardisation", version=1,
               ranges={"temperature": {"low": 0.0, "low_open": True,
                                       "help": "divides the standardised top-K logits before each teacher's "
                                               "softmax: above 1 flatter, below 1 sharper teacher distributions"}})
def infifusion_topk(logprobs: Tensor, ids: Tensor, gold_ce: Tensor, *, temperature: float = 1.0
                    ) -> tuple[Tensor, Tensor]:
    """Each teacher's top-K logits standardised (zero mean, unit variance over its K), softmaxed, averaged over
    teachers, truncated to the K most probable ids and renormalised.

    Standardising puts teachers whose logits have different scales (a confident expert, a flat generalist) on
    one footing before averaging, which InfiFusion found necessary across heterogeneous models; its ULD ranking
    loss is not used here: the target learns the fused distribution by cross-entropy like the other methods.
    """
    import torch

    valid = torch.isfinite(logprobs)
    n = valid.sum(-1, keepdim=True).clamp_min(1)
    x = torch.where(valid, logprobs.float(), torch.zeros_like(logprobs, dtype=torch.float32))
    mean = x.sum(-1, keepdim=True) / n
    var = (torch.where(valid, (x - mean) ** 2, torch.zeros_like(x))).sum(-1, keepdim=True) / n
    std = var.sqrt()
    z = torch.where(std > 0, (x - mean) / std.clamp_min(1e-12), torch.zeros_like(x)) / temperature
    z = torch.where(valid, z, torch.full_like(z, float("-inf")))
    fid, fp = _flat(ids, torch.softmax(z, dim=-1) / ids.shape[0])
    return sparse_union(fid, fp, keep=ids.shape[-1])
