"""The paper's sweeps (sweeps/paper/): valid without network; missing checkpoints are named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.config import load_sweep
from study.errors import CheckpointError
from study.prepare import prepare

PAPER = sorted((Path(__file__).parent.parent / "sweeps" / "paper").glob("*.yaml"))
METHODS = {"task_arithmetic", "ties", "model_stock", "tsv_merge", "iso_c", "subspace_boosting"}


def test_there_is_one_sweep_per_base_of_the_study():
    assert [p.stem for p in PAPER] == ["llama3.1-8b", "llama3.2-3b", "qwen3-4b", "qwen3-8b"]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_sweep_matches_the_published_design(path):
    sweep = load_sweep(path)
    assert sweep.ks == list(range(2, 13))
    assert {m.name for m in sweep.methods} == METHODS
    assert len(sweep.evaluation.tasks) == 16 == len(set(sweep.evaluation.tasks))
    assert [len(b.checkpoints) for b in sweep.bases] == [12]
    assert "our choice" in path.read_text().lower()


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_prepare_names_the_checkpoint_missing_from_the_local_cache(path, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        prepare(path)
