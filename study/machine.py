"""The machine a result came from: CPU model, its widest vector instruction set, and the library versions.

Trained weights and floating-point sums differ between CPUs (AVX2 and AVX-512 kernels add in different
orders) and between library versions, and training amplifies those differences; so a zoo manifest, a
record or a report says where it was made. Versions are read from package metadata, never by importing
torch, so describing the machine costs nothing.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

ISAS = ("avx512", "avx2", "avx", "sse")
"""Vector instruction sets, widest first: the first one the CPU's flags name is the one reported."""

PACKAGES = ("torch", "transformers", "lm_eval")


def describe_machine() -> dict[str, str]:
    """``cpu``, ``isa``, ``python`` and the versions of ``torch``, ``transformers``, ``lm_eval``."""
    info = _cpuinfo()
    return {
        "cpu": _cpu_model(info),
        "isa": _isa(info),
        "python": platform.python_version(),
        **{name: package_version(name) for name in PACKAGES},
    }


def _cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def _field(cpuinfo: str, key: str) -> str:
    """The value of the first ``key : value`` line of ``/proc/cpuinfo`` text, or ``""``."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return ""


def _cpu_model(cpuinfo: str) -> str:
    """``lscpu``'s model name, else ``/proc/cpuinfo``'s, else ``platform.processor()``."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return _field(out, "Model name") or _field(cpuinfo, "model name") or platform.processor() or "unknown"


def _isa(cpuinfo: str) -> str:
    """The widest of ``ISAS`` in the CPU flags (``avx512`` for any ``avx512*`` flag); the machine type
    (``aarch64``, ``arm64``) where ``/proc/cpuinfo`` has no x86 flags."""
    flags = set(_field(cpuinfo, "flags").split())
    for isa in ISAS:
        if isa in flags or (isa == "avx512" and any(f.startswith("avx512") for f in flags)):
            return isa
    return platform.machine() or "unknown"


def package_version(package: str) -> str:
    """The installed version of ``package`` from its metadata (no import), or ``"not installed"``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
