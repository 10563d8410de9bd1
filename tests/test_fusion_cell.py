"""A fusion cell's pieces on tiny models: the teachers' cache, the corpus check, seeded training that resumes
from a checkpoint to the same weights, and fusion across two tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from study.errors import MethodError  # noqa: E402
from study.fusion import distributions  # noqa: E402
from study.fusion.cell import Teacher, fuse_and_train, fuse_corpus  # noqa: E402
from study.fusion.registry import get_fusion_method  # noqa: E402
from study.statistics.spec import CalibrationSpec  # noqa: E402

CORPUS = CalibrationSpec(source="zoo", sequences=24, max_tokens=64)


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return lambda: (AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32),
                    AutoTokenizer.from_pretrained(str(path)))


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    return lambda: AutoTokenizer.from_pretrained(str(path))


def teachers_of(family, n: int = 2) -> list[Teacher]:
    return [Teacher(f"test:{p.name}:{family.tokenizer}", load(p), tokenizer_of(p)) for p in family.checkpoints[:n]]


@pytest.fixture(scope="module")
def tiny_bpe_family(tmp_path_factory):
    from study.zoo.tiny import make_tiny_family

    try:
        return make_tiny_family(tmp_path_factory.mktemp("tiny-bpe"), n_checkpoints=2, tokenizer="bpe")
    except TypeError:
        pytest.skip("the BPE tiny family is not in this tree")


def test_teacher_distributions_are_cached_and_read_back_as_computed(tiny_llama_family, tmp_path):
    from study.fusion.corpus import corpus_digest, corpus_texts

    texts = corpus_texts(CORPUS)[:10]
    digest = corpus_digest(texts, 64)
    path = tiny_llama_family.checkpoints[0]
    calls = []

    def counted():
        calls.append(1)
        return load(path)()

    first = distributions.ensure("t0", counted, texts, digest, 64, 5, tmp_path)
    again = distributions.ensure("t0", counted, texts, digest, 64, 5, tmp_path)
    other_k = distributions.ensure("t0", counted, texts, digest, 64, 3, tmp_path)
    assert len(calls) == 2 and not first.cached and again.cached and not other_k.cached
    assert again.path == first.path != other_k.path and again.tokens == first.tokens
    model, tok = load(path)()
    seqs = list(first.sequences())
    assert len(seqs) == len(texts)
    for text, seq in zip(texts, seqs):
        ids = tok(text).input_ids
        assert seq.tokens == ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        top = logp[:-1].topk(5, -1)
        torch.testing.assert_close(seq.logprobs, top.values)
        assert torch.equal(seq.ids.long(), top.indices)
        torch.testing.assert_close(seq.gold, logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0])
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_killed_computation_leaves_no_cache_and_is_recomputed(tiny_llama_family, tmp_path):
    def broken():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distributions.ensure("t1", broken, ["Q: 1+1=?\nA: 2\n"], "d", 64, 4, tmp_path)
    assert not list(tmp_path.rglob("meta.json")) and not list(tmp_path.rglob("*.tmp"))
    run = distributions.ensure("t1", load(tiny_llama_family.checkpoints[0]), ["Q: 1+1=?\nA: 2\n"], "d", 64, 4, tmp_path)
    assert not run.cached and (run.path / "meta.json").is_file()


def _fuse(family, tmp_path: Path, steps: int = 4, name: str = "min_ce", **kw):
    info = get_fusion_method(name)
    params = info.resolve_params({"steps": steps, "batch": 4, "top_k": 4, "lr": 1e-3})
    return fuse_and_train(info, params, CORPUS, teachers_of(family), load(family.base), cache_dir=tmp_path / "cache",
                          **kw)


def test_fusion_is_seeded_and_reports_its_cost(tiny_llama_family, tmp_path):
    a, cost_a = _fuse(tiny_llama_family, tmp_path)
    b, cost_b = _fuse(tiny_llama_family, tmp_path)
    assert all(torch.equal(a[n], b[n]) for n in a)
    base = load(tiny_llama_family.base)()[0].state_dict()
    assert any(not torch.equal(a[n], base[n]) for n in a)
    assert cost_a.teachers == 2 and cost_a.teachers_cached == 0 and cost_b.teachers_cached == 2
    assert cost_a.teacher_tokens == cost_b.teacher_tokens > 0 and cost_b.teacher_seconds == 0
    assert cost_a.train_steps == 4 and 0 < cost_a.train_tokens == cost_b.train_tokens
    assert not cost_a.cross_tokenizer


def test_the_corpus_must_not_contain_an_evaluated_document(tiny_llama_family, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("what is 2+2? 4\nsome text. The capital of Peru is => Lima\n")
    spec = CalibrationSpec(source="file", path=str(corpus), sequences=10, max_tokens=64)
    info = get_fusion_method("avg")
    with pytest.raises(MethodError, match="evaluated document 'The capital of Peru is =>'"):
        fuse_and_train(info, info.resolve_params({"steps": 1}), spec, teachers_of(tiny_llama_family),
                       load(tiny_llama_family.base), cache_dir=tmp_path / "c",
                       evaluated={"The capital of Peru is =>", "9+9="})
    assert not (tmp_path / "c").exists()  # refused before any teacher ran
    from study.fusion.corpus import check_not_evaluated

    check_not_evaluated(["so 9+9=18"], {"9+9="})  # a short prompt is matched only at a text's start
    with pytest.raises(MethodError):
        check_not_evaluated(["9+9=18"], {"9+9="})
    check_not_evaluated(["Q: 2+2=?\nA: 4\n"], {"Q: 2+2=?\nA:"}, allowed={"Q: 2+2=?\nA:"})


def test_training_resumed_from_a_checkpoint_ends_with_the_uninterrupted_weights(tiny_llama_family, tmp_path):
    """A run killed after its step-2 checkpoint, started again, ends bit for bit where one unbroken run ends."""
    from study.fusion.train import train_target

    info = get_fusion_method("min_ce")
    model, tok = load(tiny_llama_family.base)()
    texts = ["Q: 1+2=?\nA: 3\n", "Q: letter after b?\nA: c\n", "Q: first letter of dog?\nA: d\n"] * 3
    teachers = [distributions.ensure(t.identity, t.load_model, texts, "resume", 64, 4, tmp_path / "cache")
                for t in teachers_of(tiny_llama_family)]
    fused, _ = fuse_corpus(texts, 64, tok, teachers, [tok, tok], info, info.resolve_params({}))
    settings = dict(steps=5, lr=1e-3, lambda_=0.5, batch=3, seed=1, pad=tok.pad_token_id)
    whole = train_target(model, fused, **settings)

    class Killed(Exception):
        pass

    broken, _ = load(tiny_llama_family.base)()
    forward, calls = broken.forward, []

    def dies_at_step_four(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return forward(*args, **kwargs)

    broken.forward = dies_at_step_four
    ckpt = tmp_path / "train" / "cell.pt"
    with pytest.raises(Killed):
        train_target(broken, fused, checkpoint=ckpt, checkpoint_every=2, **settings)
    assert ckpt.is_file()
    fresh, _ = load(tiny_llama_family.base)()
    resumed = train_target(fresh, fused, checkpoint=ckpt, checkpoint_every=2, **settings)
    assert resumed.resumed_from == 2 and resumed.tokens == whole.tokens
    assert resumed.losses == pytest.approx(whole.losses, abs=0)
    ref = model.state_dict()
    assert all(torch.equal(v, ref[n]) for n, v in fresh.state_dict().items())


def test_teachers_with_another_tokenizer_are_aligned_and_fused(tiny_llama_family, tiny_bpe_family, tmp_path):
    """BPE teachers, a character-vocabulary target: every fused row is a distribution over target ids."""
    from study.fusion.corpus import corpus_digest, corpus_texts

    texts = corpus_texts(CORPUS)
    teachers = teachers_of(tiny_bpe_family)
    dists = [distributions.ensure(t.identity, t.load_model, texts, corpus_digest(texts, 64), 64, 4, tmp_path)
             for t in teachers]
    _, tok = load(tiny_llama_family.base)()
    for name in ("min_ce", "avg", "infifusion_topk"):
        info = get_fusion_method(name)
        fused, crossed = fuse_corpus(texts, 64, tok, dists, [t.load_tokenizer() for t in teachers], info,
                                     info.resolve_params({}))
        assert crossed and len(fused) == len(texts)
        for text, seq in zip(texts, fused):
            assert seq.tokens == tok(text, truncation=True, max_length=64).input_ids
            torch.testing.assert_close(seq.probs.sum(-1), torch.ones(len(seq.tokens) - 1), atol=1e-5, rtol=0)
            assert int(seq.ids.max()) < len(tok) and (seq.ids[seq.probs > 0] != tok.pad_token_id).all()
    state, cost = fuse_and_train(get_fusion_method("min_ce"), get_fusion_method("min_ce").resolve_params(
        {"steps": 2, "batch": 4, "top_k": 4}), CORPUS, teachers, load(tiny_llama_family.base), cache_dir=tmp_path)
    assert cost.cross_tokenizer and cost.teachers_cached == 2 and state
