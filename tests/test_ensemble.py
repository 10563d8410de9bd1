"""The output ensemble: k identical models score as one model; two models average their probabilities."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from study.ensemble import EnsembleLM, evaluate_ensemble  # noqa: E402

CONTEXTS = ["Q: 3+4\nA:", "Q: first letter of apple\nA:", "Q: x\nA:", "Q: colour of the sky today\nA:"]


@pytest.fixture(scope="module")
def tokenizer():
    from study.zoo.tokenizer import build_tokenizer

    return build_tokenizer()


def tiny_llama(tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def ll_requests(pairs):
    return [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]


def gen_requests(max_gen_toks: int = 12):
    kwargs = {"until": ["\n"], "max_gen_toks": max_gen_toks, "do_sample": False}
    return [Instance(request_type="generate_until", doc={}, arguments=(c, dict(kwargs)), idx=i)
            for i, c in enumerate(CONTEXTS)]


PAIRS = [(c, " 7") for c in CONTEXTS] + [(c, " seven and more") for c in CONTEXTS]


def test_identical_models_score_as_the_model_alone(tokenizer):
    model = tiny_llama(tokenizer, 0)
    single = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3)
    ens = EnsembleLM([model, copy.deepcopy(model), copy.deepcopy(model)], tokenizer, batch_size=3)
    for (a, greedy_a), (b, greedy_b) in zip(single.loglikelihood(ll_requests(PAIRS)),
                                            ens.loglikelihood(ll_requests(PAIRS))):
        assert b == pytest.approx(a, abs=1e-4)
        assert greedy_a == greedy_b
    assert ens.generate_until(gen_requests()) == single.generate_until(gen_requests())


def test_two_models_average_probabilities_token_by_token(tokenizer):
    m1, m2 = tiny_llama(tokenizer, 1), tiny_llama(tokenizer, 2)
    ens = EnsembleLM([m1, m2], tokenizer, batch_size=4)
    got = [ll for ll, _ in ens.loglikelihood(ll_requests(PAIRS))]
    for (context, continuation), value in zip(PAIRS, got):
        ctx_ids = ens.tok_encode(context)
        cont_ids = ens.tok_encode(context + continuation)[len(ctx_ids):]
        ids = torch.tensor([ctx_ids + cont_ids])
        with torch.no_grad():
            logps = [torch.log_softmax(m(ids).logits[0].double(), -1) for m in (m1, m2)]
        expected = 0.0
        for pos, tok in enumerate(cont_ids):
            row = len(ctx_ids) + pos - 1
            expected += math.log((math.exp(logps[0][row, tok]) + math.exp(logps[1][row, tok])) / 2)
        assert value == pytest.approx(expected, abs=1e-4)
    one_token = [(c, "7") for c in CONTEXTS]
    singles = [[ll for ll, _ in HFLM(pretrained=m, tokenizer=tokenizer, batch_size=4).loglikelihood(ll_requests(one_token))]
               for m in (m1, m2)]
    for a, b, value in zip(*singles, [ll for ll, _ in ens.loglikelihood(ll_requests(one_token))]):
        assert value == pytest.approx(math.log((math.exp(a) + math.exp(b)) / 2), abs=1e-5)


def test_greedy_generation_follows_the_mean_distribution(tokenizer):
    m1, m2 = tiny_llama(tokenizer, 3), tiny_llama(tokenizer, 4)
    ens = EnsembleLM([m1, m2], tokenizer, batch_size=2)
    out = ens.generate_until(gen_requests(max_gen_toks=6))
    for context, text in zip(CONTEXTS, out):
        ids = ens.tok_encode(context)
        expected = []
        for _ in range(6):
            with torch.no_grad():
                lp = [torch.log_softmax(m(torch.tensor([ids])).logits[0, -1], -1) for m in (m1, m2)]
            nxt = int((torch.logsumexp(torch.stack(lp), 0)).argmax())
            if nxt == tokenizer.eos_token_id:
                break
            ids.append(nxt)
            expected.append(nxt)
        want = tokenizer.decode(expected, skip_special_tokens=True).split("\n")[0]
        assert text == want


def _task_files(tmp: Path) -> list[dict]:
    docs = [{"question": q, "answer": a, "choices": [" yes", " no"], "label": i % 2}
            for i, (q, a) in enumerate([("1+1", "2"), ("2+2", "4"), ("3+3", "6")])]
    data = tmp / "docs.jsonl"
    data.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "doc_to_text": "Q: {{question}}\nA:"}
    mc = {**common, "task": "ens_mc", "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
          "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc"}]}
    gen = {**common, "task": "ens_gen", "output_type": "generate_until", "doc_to_target": " {{answer}}",
           "generation_kwargs": {"until": ["\n"], "max_gen_toks": 5, "do_sample": False},
           "metric_list": [{"metric": "exact_match"}]}
    return [mc, gen]


def test_evaluate_ensemble_of_one_checkpoint_twice_matches_the_evaluator(tokenizer, tmp_path):
    from study.config import EvaluationSpec
    from study.evaluate import Evaluator

    model = tiny_llama(tokenizer, 5)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    spec = EvaluationSpec(tasks=["ens_mc", "ens_gen"], batch_size=2, max_gen_toks=5)
    evaluator = Evaluator(tmp_path / "model", spec, _task_files(tmp_path))
    state = {n: t.clone() for n, t in model.state_dict().items()}
    alone = evaluator.evaluate(state)
    ens = evaluate_ensemble(evaluator, [state, state])
    assert ens.scores.keys() == alone.scores.keys()
    for task in alone.scores:
        assert ens.scores[task]["score"] == pytest.approx(alone.scores[task]["score"])
    strip = lambda rows: sorted((s["task"], s["doc_id"], s.get("response"), s.get("choice")) for s in rows)  # noqa: E731
    assert strip(ens.samples) == strip(alone.samples)
