"""One vLLM evaluation in its own process: ``python -m study.vllm_worker REQUEST.json``.

Reads the request written by ``study.evaluate_vllm.VllmEvaluator``, scores the model with lm-eval's
``vllm`` model, writes ``{"results", "samples"}`` as JSON and exits, which is the only reliable way to give
the GPU memory back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(request_path: str) -> None:
    from lm_eval.evaluator import evaluate
    from lm_eval.models.vllm_causallms import VLLM

    from study.config import EvaluationSpec
    from study.evaluate import _set_seeds, build_task_dict

    req = json.loads(Path(request_path).read_text())
    spec = EvaluationSpec.model_validate(req["spec"])
    engine = {"gpu_memory_utilization": 0.85, "max_model_len": 4096, **spec.vllm}
    lm = VLLM(pretrained=req["model"], dtype=spec.dtype, batch_size="auto", seed=spec.seed,
              trust_remote_code=req["trust_remote_code"], **engine)
    _set_seeds(spec.seed)
    results = evaluate(lm=lm, task_dict=build_task_dict(req["tasks"], spec), limit=spec.limit, log_samples=True,
                       bootstrap_iters=0, apply_chat_template=spec.apply_chat_template, fewshot_as_multiturn=False,
                       verbosity="ERROR")
    out = {"results": results["results"], "samples": results.get("samples", {})}
    Path(req["out"]).write_text(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
