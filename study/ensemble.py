"""The output ensemble of a subset: the reference a merge of the same checkpoints should be compared with.

At every position the ensemble's next-token distribution is the mean of the k checkpoints' probabilities,
log p_ens = logsumexp_i(log p_i) - log k, which needs one shared tokenizer (same vocabulary; checked). It
costs k forward passes per token instead of one, which is what merging saves: a merge that matches the
ensemble keeps what the checkpoints know at the cost of one model.

``EnsembleLM`` subclasses lm-eval's ``HFLM`` and replaces only the two model calls (scoring and generation),
so prompts, few-shot contexts, tokenisation, batching, truncation and stop-sequence handling are exactly
those of the single-model evaluation in ``study.evaluate``: with k identical models the ensemble scores what
the model alone scores. Generation is greedy, token by token, with each model's KV cache.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

from lm_eval.models.huggingface import HFLM

from study.errors import UserError


class EnsembleLM(HFLM):
    """lm-eval LM averaging the next-token probabilities of ``models`` (loaded HF causal LMs, one tokenizer)."""

    def __init__(self, models: list[Any], tokenizer: Any, batch_size: int = 1, device: str = "cpu", **kwargs: Any):
        import torch

        if not models:
            raise UserError("an output ensemble needs at least one model")
        sizes = {m.get_output_embeddings().weight.shape[0] for m in models}
        if len(sizes) != 1:
            raise UserError(f"ensemble checkpoints disagree on vocabulary size {sorted(sizes)}: an output ensemble "
                            f"needs checkpoints sharing one tokenizer")
        for m in models:
            m.to(device).eval()
        super().__init__(pretrained=models[0], tokenizer=tokenizer, batch_size=batch_size, device=device, **kwargs)
        self.models = list(models)
        self._log_k = math.log(len(models))
        self._torch = torch
        # transformers 5.2x renamed the key-value cache argument and output field ``past_key_values`` to ``cache``
        # (the old name warns, and goes in 5.40); older releases know only the old one.
        self._cache_arg = "cache" if "cache" in inspect.signature(models[0].forward).parameters else "past_key_values"

    def _mean_logprobs(self, logits: list[Any]) -> Any:
        """log(mean_i softmax(logits_i)) in float32, whatever the models' dtype."""
        torch = self._torch
        stacked = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in logits])
        return torch.logsumexp(stacked, dim=0) - self._log_k

    def _model_call(self, inps: Any, attn_mask: Any = None, labels: Any = None) -> Any:
        """Log-probabilities of the ensemble; lm-eval's log_softmax over them is the identity."""
        with self._torch.no_grad():
            return self._mean_logprobs([m(inps).logits for m in self.models])

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **generation_kwargs: Any) -> Any:
        """Greedy decoding of the ensemble for a left-padded batch; returns context + generated ids.

        A row stops at EOS or once its decoded continuation contains a stop sequence; finished rows are filled
        with EOS, which lm-eval drops when decoding (special token) before cutting at the stop sequences.
        """
        torch = self._torch
        if generation_kwargs.get("do_sample"):
            raise UserError("the output ensemble decodes greedily: set do_sample false in the task's generation_kwargs")
        mask = generation_kwargs.get("attention_mask")
        mask = torch.ones_like(context) if mask is None else mask.to(context.device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        eos = self.eot_token_id
        ids, caches = context, [None] * len(self.models)
        step_ids, step_pos = context, positions
        done = torch.zeros(context.shape[0], dtype=torch.bool, device=context.device)
        with torch.no_grad():
            for _ in range(max(0, max_length - context.shape[1])):
                logits = []
                for i, model in enumerate(self.models):
                    out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                                **{self._cache_arg: caches[i]}, use_cache=True)
                    caches[i] = getattr(out, self._cache_arg)
                    logits.append(out.logits[:, -1, :])
                nxt = self._mean_logprobs(logits).argmax(dim=-1)
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                ids = torch.cat([ids, nxt[:, None]], dim=1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                done |= nxt == eos
                done |= self._hit_stop(ids[:, context.shape[1]:], stop)
                if bool(done.all()):
                    break
                step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
        return ids

    def _hit_stop(self, generated: Any, stop: list[str]) -> Any:
        torch = self._torch
        texts = [self.tok_decode(row.tolist()) for row in generated]
        return torch.tensor([any(s and s in t for s in stop) for t in texts], device=generated.device)


def ensemble_models(evaluator: Any, state_dicts: list[dict[str, Any]]) -> list[Any]:
    """One copy of the evaluator's model per checkpoint with its weights; the evaluator's model is untouched."""
    from study.evaluate import _tied_names

    tied = _tied_names(evaluator.model)
    models = []
    for state in state_dicts:
        model = copy.deepcopy(evaluator.model)
        missing = [n for n in model.load_state_dict(state, strict=False).missing_keys if n not in tied]
        if missing:
            raise UserError(f"ensemble member lacks {len(missing)} tensors of the model, e.g. {missing[0]}")
        models.append(model)
    return models


def evaluate_ensemble(evaluator: Any, state_dicts: list[dict[str, Any]]) -> Any:
    """Score the output ensemble of ``state_dicts`` (one per checkpoint of the subset) on ``evaluator``'s tasks.

    ``evaluator`` is the base's ``study.evaluate.Evaluator``: its tasks, settings, tokenizer and sample
    collection are reused, so an ensemble cell's record and samples have exactly the shape of any other
    cell's. Returns an ``EvalResult``. The k models are copies of the evaluator's (k times its memory), freed
    on return; the evaluator's own model is left as it was.
    """
    from study.evaluate import run_lm_eval

    spec = evaluator.spec
    device = str(next(evaluator.model.parameters()).device)
    lm = EnsembleLM(ensemble_models(evaluator, state_dicts), evaluator.tokenizer, batch_size=spec.batch_size,
                    device=device)
    return evaluator._collect(run_lm_eval(lm, evaluator.task_dict, spec))
