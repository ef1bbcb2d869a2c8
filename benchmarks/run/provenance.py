"""What a ``result.json`` records about how and where its numbers were computed: the
versions of what they depend on (:func:`versions`, read by the process that owns the
store) and the machine that ran the cell (:func:`machine`, read in the worker, which
under Ray or SLURM is another host); :func:`benchmarks.run.store.machine_label` names it
when a result is read.

The machine matters as much as the commit: PyTorch, oneDNN and MKL pick their vector code
by the processor, and the same cell trained on two kinds of CPU ended a few thousandths of
Recall@1 apart after a few hundred steps (measured: ``docs/run.md``, "The same numbers
need the same kind of CPU"). The report warns when its cells mix kinds
(:mod:`reports.provenance`).
"""

from __future__ import annotations

import copy
import hashlib
import os
import platform
import socket
import subprocess
from functools import cache
from pathlib import Path


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on, and the suite's git commit."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "avalanche-lib", "pytorch-metric-learning", "numpy",
                "lrbench"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    try:
        out["lrbench_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parents[2]).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["lrbench_commit"] = "unknown"
    return out


#: the CPU flags that decide which vector code torch, oneDNN and MKL run (hashed into
#: ``cpu_flags``): two CPUs alike in these compute alike
VECTOR_FLAGS = ("avx", "sse", "ssse", "fma", "f16c", "amx", "vnni", "gfni", "vaes",
                "vpclmul", "bmi")
#: environment variables that hold those libraries to a narrower instruction set
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
           "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of ``/proc/cpuinfo`` (empty off Linux)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            out[key.strip()] = " ".join(value.split())
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what Python says."""
    return (_cpuinfo().get("model name") or platform.processor() or platform.machine()
            or "unknown")


@cache
def _machine() -> dict[str, object]:
    info = _cpuinfo()
    flags = sorted(f for f in info.get("flags", "").split() if f.startswith(VECTOR_FLAGS))
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 (a record, never a reason for a cell to fail)
        capability = "unknown"
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "cpu": cpu_model(),
            "cpu_id": " ".join(f"{k} {info[k]}" for k in ("cpu family", "model", "stepping")
                               if k in info),
            "cpu_flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:8]
            if flags else "",
            "cpu_capability": capability,
            "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ}}


def machine() -> dict[str, object]:
    """The host a cell ran on: name, platform, CPU count, the CPU's model, family / model
    / stepping, a hash of its vector-instruction flags (:data:`VECTOR_FLAGS`), the
    instruction set torch's CPU kernels use here (``cpu_capability``: DEFAULT, AVX2,
    AVX512, ...) and any environment variable holding the libraries to a narrower one
    (:data:`ISA_ENV`): what decides their rounding. A copy: callers may change it."""
    return copy.deepcopy(_machine())
