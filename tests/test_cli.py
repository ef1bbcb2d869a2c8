"""The lrbench command line: JSON outputs, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import HANG_S
from test_datasets import make_cub

from benchmarks.cli import main


def run_json(capsys, *argv: str):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_list_datasets_and_protocols(capsys):
    names = {d["name"] for d in run_json(capsys, "list", "datasets", "--json")}
    assert names == {"cub200", "cars196", "aircraft", "flowers102", "dogs", "omniglot",
                     "imagefolder", "synth-fg"}
    protocols = {p["name"]: p for p in run_json(capsys, "list", "protocols", "--json")}
    assert protocols["cub-100+4x25"]["schedule"] == "100+4x25"
    assert main(["list", "protocols"]) == 0
    assert "synth-lifelong" in capsys.readouterr().out


def test_data_info_fixture(capsys, tmp_path):
    root = make_cub(tmp_path)
    info = run_json(capsys, "data", "info", "cub200", "--root", str(root), "--json")
    assert info["classes"] == 3 and info["images"] == 12
    assert info["splits"] == {"train": 6, "test": 6}
    assert info["class_ids"] == {"first": 3, "last": 12}


def test_data_info_synth(capsys):
    info = run_json(capsys, "data", "info", "synth-fg:glyphs", "--json")
    assert info["classes"] == 60 and info["splits"] == {"train": 2400, "test": 1200}


def test_stream_json_dataset_and_lifelong(capsys):
    out = run_json(capsys, "stream", "synth-ci", "--json")
    assert [e["num_classes"] for e in out["experiences"]] == [20, 10, 10, 10, 10]
    assert out["experiences"][1]["label_range"] == [20, 29]
    out = run_json(capsys, "stream", "--lifelong", "synth-fg:birds,synth-fg:flowers", "--json")
    assert [e["label_range"] for e in out["experiences"]] == [[0, 59], [60, 119]]


def test_stream_human_output(capsys, tmp_path):
    root = make_cub(tmp_path)
    assert main(["stream", "--dataset", "cub200", "--root", str(root), "--schedule", "1+2"]) == 0
    out = capsys.readouterr().out
    assert "2 experiences" in out and "1..2" in out


@pytest.mark.realdata
def test_real_data_info_and_stream(capsys, shared_data):
    info = run_json(capsys, "data", "info", "cub200", "--root",
                    str(shared_data / "CUB_200_2011"), "--json")
    assert (info["classes"], info["images"]) == (100, 5902)
    assert info["splits"]["train"] + info["splits"]["test"] == 5902
    out = run_json(capsys, "stream", "--dataset", "cub200", "--root",
                   str(shared_data / "CUB_200_2011"), "--schedule", "50+5x10", "--json")
    assert [e["num_classes"] for e in out["experiences"]] == [50, 10, 10, 10, 10, 10]
    assert (out["train_images"], out["test_images"]) == (info["splits"]["train"],
                                                         info["splits"]["test"])
    out = run_json(capsys, "stream", "--lifelong", "flowers102,cub200,omniglot", "--root",
                   str(shared_data), "--json")
    assert [e["num_classes"] for e in out["experiences"]] == [102, 100, 242]
    ranges = [e["label_range"] for e in out["experiences"]]
    assert ranges == [[0, 101], [102, 201], [202, 443]]


# -- bad input: the real CLI in a subprocess ----------------------------------------------
def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *argv], capture_output=True,
                          text=True, timeout=HANG_S)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("lrbench: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_command_is_one_line():
    assert_one_line_error(run_cli("strem"), "invalid choice")


def test_a_reader_that_stops_early_gets_no_traceback():
    """``lrbench list strategies | head``: the reader closes the pipe before the output
    ends; the command ends quietly (exit 0), as Unix tools do."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "list", "strategies"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # closed before anything was written: every write hits EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=HANG_S) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


IDLE = '''
from avalanche.core import SupervisedPlugin

from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy


class Idle(StrategyPlugin, SupervisedPlugin):
    """Claims to regularise, adds nothing: fails the contract kit's second check."""

    regularizer = True

    class Config(StrategyConfig):
        pass
'''


def test_check_command_runs_the_contract_kit(tmp_path):
    """`lrbench check`: exit 0 with every check listed; 1 with the failed check's reason in
    one line (a plugin whose regulariser adds nothing)."""
    from test_registry import fake_distribution, lrbench

    site = fake_distribution(tmp_path, "lrbench-test-idle", "idle = lrbench_test_idle:Idle")
    (site / "lrbench_test_idle.py").write_text(IDLE)
    passing, failing = lrbench("check", "finetune"), lrbench("check", "idle", path=site)
    out, err = passing.communicate(timeout=HANG_S)
    assert passing.returncode == 0, err
    assert out.splitlines() == [
        "finetune: contract kit (3 synth-fg experiences, small CNN)",
        "  ok    trains on 3 experiences", "  ok    finite losses", "  ok    full R matrix",
        "  ok    deterministic under a seed", "  ok    checkpoint + resume identical",
        "finetune: all 5 checks passed"]
    out, err = failing.communicate(timeout=HANG_S)
    assert failing.returncode == 1, (out, err)
    lines = out.splitlines()
    assert lines[-2].startswith("  FAIL  idle: flagged as a regulariser, but no term of its "
                                "own is non-zero after the first experience (terms: ")
    assert lines[-1] == "idle: failed after 3 passing check(s)"


def test_check_command_bad_input_is_one_line(capsys):
    assert main(["check", "l2_kd", "--hparam", "lam=-1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "'lam'" in err[0] and "greater than or equal to 0" in err[0]
    assert main(["check", "l2_kd", "--hparam", "lam"]) == 2
    assert "give KEY=VALUE" in capsys.readouterr().err


def test_check_command_refuses_an_unknown_trunk_in_one_line(capsys):
    assert main(["check", "finetune", "--trunk", "resnet19"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--trunk" in err[0] and "Did you mean 'resnet18'?" in err[0]


@pytest.mark.parametrize("flag,value,message", [
    ("--slurm-time", "0", "argument --slurm-time: give an integer >= 1, got 0"),
    ("--slurm-gpus", "-1", "argument --slurm-gpus: give an integer >= 0, got -1"),
    ("--slurm-mem", "inf", "argument --slurm-mem: give a number > 0, got 'inf'"),
])
def test_a_bad_slurm_flag_names_the_flag(flag, value, message, capsys):
    """The SLURM flags stand for slurm: settings; a bad value is blamed on the flag the
    user typed, not on the --set it becomes."""
    with pytest.raises(SystemExit) as exit_:
        main(["run", "configs/smoke.yaml", flag, value, "--dry-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "--set" not in err[0]
