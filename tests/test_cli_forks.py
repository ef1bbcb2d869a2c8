"""tests/cli_forks.py, the bad-input cases' runner: a forked run gives what a fresh
``python -m benchmarks`` gives (exit code, stdout, stderr), and a child that fails before
the command starts is reported, not lost."""

from __future__ import annotations

import os
import subprocess
import sys

from cli_forks import run_cli_many
from conftest import HANG_S, REPO


def fresh(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *argv], capture_output=True,
                          text=True, timeout=HANG_S, cwd=REPO)


def test_a_forked_run_gives_what_a_fresh_interpreter_gives(tmp_path):
    cases = [["list", "strategies"], ["strem"], ["report", str(tmp_path)]]
    env = dict(os.environ)
    forked = run_cli_many([{"argv": argv, "cwd": str(REPO), "env": env} for argv in cases],
                          workers=2, timeout=HANG_S)
    for argv, got in zip(cases, forked, strict=True):
        want = fresh(argv)
        assert (got.returncode, got.stdout, got.stderr) == (
            want.returncode, want.stdout, want.stderr), argv
    assert forked[0].returncode == 0 and "finetune" in forked[0].stdout
    assert [p.returncode for p in forked[1:]] == [2, 2]


def test_a_child_that_cannot_start_is_reported(tmp_path):
    [proc] = run_cli_many([{"argv": ["list", "strategies"], "cwd": str(tmp_path / "gone"),
                            "env": dict(os.environ)}], timeout=HANG_S)
    assert proc.returncode == 1 and "FileNotFoundError" in proc.stderr and not proc.stdout
