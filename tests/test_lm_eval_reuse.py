"""Requests built and prompts tokenised once per evaluator (``study.lm_eval_reuse``) change nothing lm-eval reports:
over a sequence of cells with different weights, every score, every logged sample (prompt, arguments, responses,
hashes) and every metric equal those of lm-eval's own path, which rebuilds and re-tokenises on every call."""

from __future__ import annotations

from study.config import EvaluationSpec

SPEC = dict(tasks=["zoo:all"], limit=5, batch_size=32, max_gen_toks=32)


def _reported(result):
    out = result.lm_eval
    return out["results"], out["samples"], result.samples


def test_reused_requests_and_tokens_report_what_lm_eval_reports(built_zoo, zoo_cell_states, monkeypatch):
    from study import lm_eval_reuse
    from study.evaluate import Evaluator, resolve_tasks

    spec = EvaluationSpec(**SPEC)
    tasks = resolve_tasks(spec.tasks)
    reusing = Evaluator(built_zoo.model("base"), spec, tasks)
    got = [_reported(reusing.evaluate(state)) for _, state in zoo_cell_states]
    assert all(getattr(t.build_all_requests, "kept", None) for t in reusing.task_dict["tasks"].values())
    assert reusing.lm.tok_encode.kept

    monkeypatch.setattr(lm_eval_reuse, "reuse_requests", lambda task_dict: None)
    monkeypatch.setattr(lm_eval_reuse, "reuse_tokens", lambda lm: None)
    plain = Evaluator(built_zoo.model("base"), spec, tasks)
    want = [_reported(plain.evaluate(state)) for _, state in zoo_cell_states]
    assert not hasattr(plain.lm.tok_encode, "kept")

    for (label, _), g, w in zip(zoo_cell_states, got, want):
        assert g == w, label
    assert got[0] != got[1] and got[3] == got[0]


def test_every_cell_gets_fresh_requests_and_token_lists():
    from dataclasses import dataclass, field

    from study.lm_eval_reuse import reuse_requests, reuse_tokens

    @dataclass
    class Instance:
        arguments: tuple
        resps: list = field(default_factory=list)
        filtered_resps: dict = field(default_factory=dict)

    class Config:
        num_fewshot = 0
        generation_kwargs = {"max_gen_toks": 4}

    class Task:
        config = Config()
        builds = 0

        def build_all_requests(self, **kwargs):
            self.builds += 1
            self._instances = [Instance(("prompt", kwargs["limit"]))]

        @property
        def instances(self):
            return self._instances

    class LM:
        calls = 0

        def tok_encode(self, string, add_special_tokens=None):
            self.calls += 1
            return [len(s) for s in string] if isinstance(string, (list, tuple)) else [len(string), 7]

    task, lm = Task(), LM()
    reuse_requests({"tasks": {"t": task}})
    reuse_requests({"tasks": {"t": task}})  # installing twice wraps once
    reuse_tokens(lm)
    reuse_tokens(lm)
    for _ in range(3):
        task.build_all_requests(limit=2, chat_template=None)
        assert task.instances[0].resps == [] and task.instances[0].filtered_resps == {}
        task.instances[0].resps.append("answer of this cell")
        task.instances[0].filtered_resps["none"] = "answer"
        ids = lm.tok_encode("abc")
        assert ids == [3, 7]
        ids.append(99)
    assert task.builds == 1 and lm.calls == 1
    task.build_all_requests(limit=3, chat_template=None)  # other arguments: built again
    assert task.builds == 2 and task.instances[0].arguments == ("prompt", 3)
    assert lm.tok_encode(["ab", "c"]) == [2, 1] and lm.tok_encode(("ab", "c")) == [2, 1] and lm.calls == 2
