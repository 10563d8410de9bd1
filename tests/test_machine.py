"""describe_machine names the CPU, its widest vector ISA and the library versions, without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from study import machine
from study.machine import describe_machine

FLAGS = "fpu sse sse2 avx avx2 avx512f avx512bw"


@pytest.mark.parametrize(
    ("flags", "isa"),
    [(FLAGS, "avx512"), ("sse sse2 avx avx2 fma", "avx2"), ("sse sse2 avx", "avx"), ("sse sse2", "sse")],
)
def test_isa_is_the_widest_flag(
    flags: str, isa: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    monkeypatch.setattr(machine, "CPUINFO", cpuinfo)
    assert describe_machine()["isa"] == isa


def test_isa_falls_back_to_the_machine_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "absent")
    monkeypatch.setattr(machine.platform, "machine", lambda: "arm64")
    assert describe_machine()["isa"] == "arm64"


def test_cpu_model_from_cpuinfo_without_lscpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: Test CPU 9000\nflags\t\t: {FLAGS}\n")
    monkeypatch.setattr(machine, "CPUINFO", cpuinfo)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert describe_machine()["cpu"] == "Test CPU 9000"


def test_versions_without_importing_torch() -> None:
    code = "import sys; from study.machine import describe_machine as d; print(d()); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'torch'" not in out.splitlines()[1]
    described = describe_machine()
    assert set(described) == {"cpu", "isa", "python", "torch", "transformers", "lm_eval"}
    import torch

    assert described["torch"] == torch.__version__ and described["python"] in out
