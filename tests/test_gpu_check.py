"""The GPU check (tools/gpu-check.sh, benchmarks.gpu_check): without CUDA it says so and
exits 0; its checks take a device and are run here on the CPU, small."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from benchmarks import gpu_check


def test_script_says_no_cuda_device_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device: the script would run the checks")
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu-check.sh")], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device: the GPU check needs one; nothing was run"


def test_engine_row_compares_devices_and_times_a_matmul():
    row = gpu_check.check_engine("cpu", n=3000, d=64)
    assert row.status == "ok" and "max |diff| over K 0.0e+00" in row.result
    assert "for one N x N matmul" in row.result


def test_amp_and_resume_rows_on_the_cpu(tmp_path):
    """The bf16 row's two cells (autocast inactive on CPU: equal) and the kill -9 row's
    three runs, on synth-fg: a resumed run equals an uninterrupted one wherever the kill
    lands, so the row passes whatever the machine's speed."""
    amp = gpu_check.check_amp("cpu", None, tmp_path)
    assert amp.status == "ok" and "|diff| 0.0000" in amp.result, amp.result
    resume = gpu_check.check_resume("cpu", None, tmp_path)
    assert resume.status == "ok", resume.result
    assert "identical to an uninterrupted run" in resume.result


def test_speed_row_and_the_table():
    row = gpu_check.check_speed("cpu", batch=2, size=64, trunks=("small_cnn",))
    assert row.status == "ok" and "small_cnn:" in row.result
    text = gpu_check.table([row, gpu_check.Row("x", "skipped", "a | b")])
    assert text.splitlines()[0] == "| check | status | result | s |"
    assert "a / b" in text and len(text.splitlines()) == 4


def test_rows_without_real_data_are_skipped_and_a_failure_is_a_row(tmp_path, monkeypatch):
    def boom(device: str):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(gpu_check, "check_contract", boom)
    monkeypatch.setattr(gpu_check, "check_engine", lambda d: gpu_check.Row("e", "ok", ""))
    monkeypatch.setattr(gpu_check, "check_speed", lambda d: gpu_check.Row("s", "ok", ""))
    rows = gpu_check.run_checks("cpu", None, tmp_path, log=lambda m: None)
    assert [r.status for r in rows] == ["FAIL", "ok", "skipped", "skipped", "ok"]
    assert rows[0].result == "RuntimeError: no kernel"
