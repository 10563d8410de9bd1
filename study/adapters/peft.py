"""``peft:<combination_type>``: LoRA-adapter checkpoints combined by PEFT and merged into the base.

Every checkpoint must be a LoRA adapter over the cell's base. They are loaded into one ``PeftModel``,
combined with ``add_weighted_adapter(combination_type=...)`` (``linear``, ``svd``, ``cat``, ``ties``,
``ties_svd``, ``dare_linear``, ``dare_ties``, ``dare_*_svd``, ``magnitude_prune``, ``magnitude_prune_svd``),
merged into the base weights with ``merge_and_unload`` and saved. PEFT's DARE draws its masks from torch's
global generator, so ``seed`` seeds it just before the combination. Defaults follow methods.md where a native
method exists (ties density 0.2, DARE density 0.7); PEFT's own are used otherwise. ``svd_rank: 0`` means
PEFT's default (the largest rank of the inputs).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from study.adapters import not_per_tensor
from study.errors import CheckpointError, MethodError
from study.lora import ADAPTER_CONFIG, check_adapter_base, is_lora_dir
from study.methods.schema import MethodInfo, Param
from study.tensors import SafetensorsSource, storage_dtype

COMBINATIONS = (
    "svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd",
    "magnitude_prune", "magnitude_prune_svd",
)
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json",
)


def _params(combination: str) -> tuple[Param, ...]:
    params = [Param("weight", float, 1.0, per_model=True)]
    if combination.startswith(("ties", "dare", "magnitude_prune")):
        default = 0.7 if combination.startswith("dare") else 0.2
        params.append(Param("density", float, default, low=0.0, low_open=True, high=1.0))
    if "ties" in combination:
        params.append(Param("majority_sign_method", str, "total", choices=("total", "frequency")))
    if combination.startswith("dare"):
        params.append(Param("seed", int, 0, low=0))
    if "svd" in combination:
        params.append(Param("svd_rank", int, 0, low=0))
    return tuple(params)


def peft_method(name: str, combination: str) -> MethodInfo:
    """The schema and runner of ``peft:<combination>``."""
    if combination not in COMBINATIONS:
        raise MethodError(f"method {name!r}: PEFT has no combination_type {combination!r} (one of {', '.join(COMBINATIONS)})")

    def run(base_dir: Path, checkpoint_dirs: list[Path], resolved: dict[str, Any], out_dir: Path) -> None:
        run_peft(combination, base_dir, checkpoint_dirs, resolved, out_dir)

    return MethodInfo(
        name=name,
        fn=not_per_tensor,
        params=_params(combination),
        reference="PEFT LoraModel.add_weighted_adapter, https://huggingface.co/docs/peft/developer_guides/model_merging",
        summary=f"LoRA adapters combined by PEFT ({combination}) and merged into the base",
        whole_model=run,
    )


def run_peft(combination: str, base_dir: Path, checkpoint_dirs: list[Path], resolved: dict[str, Any], out_dir: Path) -> None:
    """Combine the LoRA checkpoints with PEFT and write the merged full model to ``out_dir``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for c in checkpoint_dirs:
        if not is_lora_dir(c):
            raise CheckpointError(f"peft:{combination}: checkpoint {c} is not a LoRA adapter (no {ADAPTER_CONFIG})")
    base_src = SafetensorsSource(Path(base_dir))
    for c in checkpoint_dirs:
        check_adapter_base(Path(c), base_src)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    names = [f"m{i}" for i in range(len(checkpoint_dirs))]
    model = PeftModel.from_pretrained(model, str(checkpoint_dirs[0]), adapter_name=names[0])
    for n, c in zip(names[1:], checkpoint_dirs[1:]):
        model.load_adapter(str(c), adapter_name=n)
    kwargs: dict[str, Any] = {}
    if "density" in resolved:
        kwargs["density"] = resolved["density"]
    if "majority_sign_method" in resolved:
        kwargs["majority_sign_method"] = resolved["majority_sign_method"]
    if resolved.get("svd_rank"):
        kwargs["svd_rank"] = resolved["svd_rank"]
    if "seed" in resolved:
        torch.manual_seed(resolved["seed"])
    model.add_weighted_adapter(names, list(resolved["weight"]), "merged", combination_type=combination, **kwargs)
    model.set_adapter("merged")
    merged = model.merge_and_unload(adapter_names=["merged"])
    dtype = storage_dtype(base_src)
    merged.to(getattr(torch, dtype)).save_pretrained(str(out_dir), safe_serialization=True)
    for fname in TOKENIZER_FILES:
        if (Path(base_dir) / fname).is_file():
            shutil.copy2(Path(base_dir) / fname, Path(out_dir) / fname)
