"""Scoring with lm-eval's vLLM backend on a GPU (``evaluation.backend: vllm``).

vLLM does not free GPU memory when its engine is deleted, so every cell's model is scored in a fresh
subprocess (``study.vllm_worker``): the merged weights are written to fast local scratch
(``$MERGE_STUDY_SCRATCH``, else the temp dir) as a Hugging Face directory, the worker loads it with vLLM,
runs the same lm-eval tasks and writes results and samples as JSON, and the directory is deleted. Scores and
samples go through the same ``collect_results`` as the HF backend, so records look the same. vllm itself is
imported only inside the worker: this module imports on machines without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from study.config import EvaluationSpec
from study.errors import UserError
from study.evaluate import EvalResult, _flatten, _output_type, build_task_dict, collect_results
from study.merge import MODEL_FILES


def write_model_dir(base_dir: Path, state_dict: dict[str, Any], out: Path) -> Path:
    """A loadable HF directory: the base's config and tokenizer files plus ``state_dict`` as safetensors."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out / name)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


class VllmEvaluator:
    """lm-eval's vLLM model, one fresh subprocess per scored model (GPU only; needs the ``vllm`` extra)."""

    def __init__(self, model_dir: Path, spec: EvaluationSpec, tasks: list[Any], *, trust_remote_code: bool = False):
        from transformers import AutoTokenizer

        if spec.batch_size < 1:
            raise UserError("evaluation.batch_size must be >= 1")
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.tasks = tasks
        self.trust_remote_code = trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.generation_tasks = {n for n, t in _flatten(build_task_dict(tasks, spec)) if _output_type(t) == "generate_until"}

    def request(self, model_path: Path, out: Path) -> dict[str, Any]:
        """What the worker runs: model, tasks, and every lm-eval/vLLM setting, explicit."""
        return {"model": str(model_path), "tasks": self.tasks, "spec": self.spec.model_dump(mode="json"),
                "trust_remote_code": self.trust_remote_code, "out": str(out)}

    def evaluate(self, state_dict: dict[str, Any] | None = None) -> EvalResult:
        scratch_root = os.environ.get("MERGE_STUDY_SCRATCH") or None
        work = Path(tempfile.mkdtemp(prefix="merge-study-vllm-", dir=scratch_root))
        try:
            model_path = self.model_dir if state_dict is None else write_model_dir(self.model_dir, state_dict, work / "model")
            req = work / "request.json"
            req.write_text(json.dumps(self.request(model_path, work / "results.json")))
            proc = subprocess.run([sys.executable, "-m", "study.vllm_worker", str(req)], capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
                raise RuntimeError(f"vLLM worker exited {proc.returncode}:\n{tail}")
            results = json.loads((work / "results.json").read_text())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return collect_results(results, self.tokenizer, self.spec, self.generation_tasks)
