"""What a ``result.json`` records about how and where its numbers were computed: the
versions of what they depend on (:func:`versions`, read by the process that owns the
store) and the machine that ran the cell (:func:`machine`, read in the worker, which
under Ray or SLURM is another host); :func:`benchmarks.run.store.machine_label` names it
when a result is read.

The machine matters as much as the commit: PyTorch's CPU kernels pick their vector code
by the processor's instruction set, so a training run on two CPUs of different families
can differ in the last bits of a step and then, a few hundred steps later, in the
second decimal of Recall@1 (measured: ``docs/results/README.md``, "Reproducing these
numbers"). The report warns when its cells mix machines (:mod:`reports.page`).
"""

from __future__ import annotations

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


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what Python says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return " ".join(line.partition(":")[2].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@cache
def machine() -> dict[str, object]:
    """The host a cell ran on: name, platform, CPU count, the CPU's model and the vector
    instruction set torch's CPU kernels use here (``cpu_capability``: DEFAULT, AVX2,
    AVX512, ...), which decides their rounding."""
    import torch

    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "cpu": cpu_model(),
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
