"""Fusion across tokenizers on the zoo: the BPE family's experts teach the character zoo's base.

Needs both zoos built (`merge-study zoo build`, `merge-study zoo build --family bpe`); skipped otherwise. Whether
the fused base beats the base on the teachers' own skills is printed as measured, not asserted: it is a result,
not a property of the code.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_bpe_teachers_fuse_into_the_character_base(capsys, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.config import EvaluationSpec
    from study.errors import UserError
    from study.evaluate import Evaluator, resolve_tasks
    from study.fusion.cell import Teacher, fuse_and_train
    from study.fusion.registry import get_fusion_method
    from study.statistics.spec import CalibrationSpec
    from study.zoo import load_zoo

    try:
        char, bpe = load_zoo(), load_zoo(family="bpe")
    except (UserError, TypeError) as exc:
        pytest.skip(f"both zoo families must be built: {exc}")

    def loader(path):
        return lambda: (AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32),
                        AutoTokenizer.from_pretrained(str(path)))

    experts = ["add", "first"]
    teachers = [Teacher(bpe.model_digest(e), loader(bpe.model(e)),
                        (lambda p=bpe.model(e): AutoTokenizer.from_pretrained(str(p)))) for e in experts]
    info = get_fusion_method("min_ce")
    state, cost = fuse_and_train(info, info.resolve_params({"steps": 100}), CalibrationSpec(sequences=256,
                                 max_tokens=128), teachers, loader(char.model("base")), cache_dir=tmp_path)
    assert cost.cross_tokenizer and cost.teachers == 2 and cost.train_tokens > 0
    tasks = ["zoo:add", "zoo:first"]
    evaluator = Evaluator(char.model("base"), EvaluationSpec(tasks=tasks, limit=40, batch_size=32, max_gen_toks=48),
                          resolve_tasks(tasks))
    before = {t: v["score"] for t, v in evaluator.evaluate().scores.items()}
    after = {t: v["score"] for t, v in evaluator.evaluate(state).scores.items()}
    assert set(before) == set(after) and all(0 <= v <= 1 for v in after.values())
    with capsys.disabled():
        print(f"\nBPE teachers {experts} -> char base, min_ce 100 steps: own-task scores base {before} -> fused "
              f"{after}; train {cost.train_seconds:.1f} s, teachers {cost.teacher_seconds:.1f} s")
