"""A method from another package, registered only through the ``study.methods`` entry point group."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from study.merge import merge_state_dict, open_inputs
from study.methods import registry


def test_plugin_installs_lists_and_merges(plugin_example, llama_family):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_example), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; from study.methods.registry import method_names; "
         "print(' '.join(method_names())); print('torch' in sys.modules)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    assert "median" in listed[0].split() and listed[1] == "False"

    assert "median" in registry.method_names()
    info = registry.get_method("median")
    inputs = open_inputs(llama_family.base, llama_family.checkpoints[:3])
    merged = merge_state_dict(inputs, info, info.resolve_params({"lambda": 1.0}, 3))
    name = "model.layers.0.mlp.up_proj.weight"
    base, tensors = inputs.load(name)
    expected = base + torch.stack([t - base for t in tensors]).median(dim=0).values
    torch.testing.assert_close(merged[name], expected)


def test_plugin_passes_the_shared_invariants(plugin_example, family):
    from test_methods import check_invariants

    check_invariants(family, "median")
