"""lrbench run: the matrix file, the results store, resumption, locking, parallel cells."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from conftest import HANG_S, SHARED_DATA, SMOKE_FAST

from benchmarks.cli import main
from benchmarks.config import Cell, expand_cells, load_config, parse_config
from benchmarks.errors import LrbenchError
from benchmarks.run.store import lock_free, store_lock
from benchmarks.runner import run_matrix

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
FAST = ["training.iterations=3"]


def results(store: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in (store / "cells").glob("*/result.json")}


def test_store_layout_and_tidy_table(smoke_store):
    res = results(smoke_store)
    assert set(res) == {f"synth-tiny__{s}__seed{k}" for s in ("finetune", "l2_kd") for k in (0, 1)}
    one = res["synth-tiny__l2_kd__seed1"]
    assert one["status"] == "finished" and one["config"]["hparams"] == {"lam": 1.0}
    r1 = one["payload"]["r_matrix"]["recall"]["1"]
    assert len(r1) == 3 and all(len(row) == 3 and None not in row for row in r1)
    assert {"torch", "avalanche-lib", "lrbench_commit"} <= set(one["versions"])
    assert one["host"]["hostname"]
    # the worker's machine (under Ray or SLURM another host than the runner's): its CPU and
    # the vector instruction set torch's kernels use there, which decides their rounding
    import torch

    from benchmarks.run.provenance import cpu_model

    assert one["host"]["cpu"] == cpu_model() and one["host"]["cpu"]
    assert one["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert one["host"]["isa_env"] == {} and "cpu_flags" in one["host"]
    lines = (smoke_store / "results.csv").read_text().splitlines()
    assert lines[0] == "scenario,strategy,seed,train_exp,eval_exp,metric,k,value"
    # per cell: 3 Ks x 9 entries + mAP 9, plus seen: 3 Ks x 3 + mAP 3, plus per experience
    # the steps, the metric loss and the total (3 x 3), and l2_kd's term after the first (2)
    assert len(lines) - 1 == 4 * (3 * 9 + 9 + 3 * 3 + 3 + 3 * 3) + 2 * 2
    losses = one["payload"]["losses"]
    assert losses["steps"] == [3.0, 3.0, 3.0]
    assert losses["l2_kd"][0] is None and all(v > 0 for v in losses["l2_kd"][1:])
    assert all(v > 0 for v in losses["metric"]) and one["payload"]["warnings"] == []
    summary, seen = one["payload"]["summary"], one["payload"]["seen"]["recall"]["1"]
    assert summary["final_seen"] == seen[-1]
    assert summary["avg_incremental_seen"] == pytest.approx(sum(seen) / len(seen))
    assert (smoke_store / "matrix.yaml").is_file() and lock_free(smoke_store)
    import pandas as pd

    frame = pd.read_parquet(smoke_store / "results.parquet")
    assert len(frame) == len(lines) - 1 and list(frame.columns) == lines[0].split(",")
    assert frame.query("metric == 'recall' and k == '1'")["value"].between(0, 1).all()


def test_rerun_skips_finished_cells_byte_identical(smoke_store):
    before = {p: p.read_bytes() for p in (smoke_store / "cells").glob("*/result.json")}
    counts = run_matrix(load_config(SMOKE, FAST), smoke_store, progress=False)
    assert counts["skipped"] == 4 and counts["finished"] == 0
    assert {p: p.read_bytes() for p in before} == before


def test_store_from_before_a_new_setting_is_the_same_matrix(smoke_store, tmp_path):
    """A matrix.yaml written before a setting existed (here: without
    training.max_grad_norm and the scenarios' validation) still matches its matrix."""
    import shutil

    store = tmp_path / "older"
    shutil.copytree(smoke_store, store)
    text = (store / "matrix.yaml").read_text()
    older = "\n".join(line for line in text.splitlines()
                      if "max_grad_norm" not in line and "validation" not in line) + "\n"
    assert older != text
    (store / "matrix.yaml").write_text(older)
    counts = run_matrix(load_config(SMOKE, FAST), store, progress=False)
    assert counts["skipped"] == 4 and counts["finished"] == 0
    (store / "matrix.yaml").write_text(older.replace("lr: 0.002", "lr: 0.5"))
    with pytest.raises(LrbenchError, match="holds a different matrix"):
        run_matrix(load_config(SMOKE, FAST), store, progress=False)


def test_changed_config_hash_reruns_only_that_strategy(smoke_store, tmp_path):
    cells = {c.id: c.hash for c in expand_cells(load_config(SMOKE, FAST))}
    changed = {c.id: c.hash for c in expand_cells(
        load_config(SMOKE, [*FAST, "strategies.l2_kd.lam=2.0"]))}
    assert [k for k in cells if cells[k] != changed[k]] == [
        "synth-tiny__l2_kd__seed0", "synth-tiny__l2_kd__seed1"]
    with pytest.raises(LrbenchError, match="holds a different matrix"):
        run_matrix(load_config(SMOKE, [*FAST, "strategies.l2_kd.lam=2.0"]), smoke_store,
                   progress=False)


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid(config, capsys, tmp_path, monkeypatch):
    """Each shipped matrix passes the dry run's checks (the real-data ones on
    ../shared/data: the dry run checks every experience's batches can be drawn). The
    synthetic ones time their model's steps for the wall-time estimate; the real-data ones
    get given rates instead (timing a 224 px BN-Inception costs half a minute, and what is
    checked here is the matrix: tests/test_estimate.py checks the estimate's arithmetic
    and the timing itself)."""
    scenarios = load_config(REPO / "configs" / config, registries=False).scenarios
    if any(not n.startswith("synth-fg") for sc in scenarios
           for n in sc.datasets or [sc.dataset or ""]):
        if not (SHARED_DATA / "CUB_200_2011" / "images.txt").is_file():
            pytest.skip("real data not available (../shared/data is absent)")
        monkeypatch.setenv("LRBENCH_DATA", str(SHARED_DATA))
        from benchmarks.run import estimate

        monkeypatch.setattr(estimate, "step_rate", lambda *a, **k: 10.0)
        monkeypatch.setattr(estimate, "flops_per_image", lambda *a, **k: 1e9)
    code = main(["run", str(REPO / "configs" / config), "--dry-run",
                 "--out", str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert "will run; store" in out.strip().splitlines()[-1]
    assert "expected wall time, cells one after another: " in out
    if config.endswith("-paper.yaml") and code == 2:  # the full CUB-200 is not here
        assert "needs 200 classes but cub200 has 100" in err
    else:
        assert code == 0, err


def test_dry_run_says_which_cells_are_done_and_what_would_be_refused(smoke_store, capsys):
    hashes = {c.id: c.hash for c in expand_cells(load_config(SMOKE, FAST))}
    assert main(["run", str(SMOKE), "--dry-run", "--out", str(smoke_store),
                 "--set", "training.iterations=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"4 cells: 4 done, 0 will run; store {smoke_store} (exists)"
    assert lines[0].split() == [hashes["synth-tiny__finetune__seed0"],
                                "synth-tiny__finetune__seed0", "done"]
    before = sorted(p.stat().st_mtime_ns for p in smoke_store.rglob("*") if p.is_file())
    # another setting: every cell would run, and the run would be refused, naming it
    assert main(["run", str(SMOKE), "--dry-run", "--out", str(smoke_store),
                 "--set", "training.iterations=4"]) == 2
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("4 cells: 0 done, 4 will run")
    assert "would be refused" in err and "training.iterations: 3 -> 4" in err
    assert err.count("\n") == 1
    # --resume: accepted; nothing was written by either dry run
    assert main(["run", str(SMOKE), "--dry-run", "--out", str(smoke_store), "--resume",
                 "--set", "training.iterations=4"]) == 0
    assert sorted(p.stat().st_mtime_ns for p in smoke_store.rglob("*") if p.is_file()) == before


def test_cells_are_typed_frozen_and_keep_their_hashes():
    """A cell is a frozen ``Cell``; its hash is the one stores written before the typed
    cell hold (pinned: a change here means every store recomputes), and it round-trips
    through ``result.json``'s ``config``."""
    cells = {c.id: c for c in expand_cells(load_config(SMOKE))}
    assert {i: c.hash for i, c in cells.items()} == {
        "synth-tiny__finetune__seed0": "706f6b7f2c01b1c9",
        "synth-tiny__finetune__seed1": "4b3fb83ae1a5824e",
        "synth-tiny__l2_kd__seed0": "a851fe6972a7e6a4",
        "synth-tiny__l2_kd__seed1": "bf9575c67470cef9"}
    # fecd and dkd as stored before their ablation switches existed: at their defaults
    # those switches are left out of the hash (StrategyConfig.hash_omits_default)
    kd = {c.id: c.hash for c in expand_cells(load_config(
        SMOKE, ["strategies={fecd: {}, dkd: {}}", "seeds=[0]"]))}
    assert kd == {"synth-tiny__fecd__seed0": "cf29c6c25f54c810",
                  "synth-tiny__dkd__seed0": "6bb0da8cdbf5293d"}
    ablated = expand_cells(load_config(SMOKE, ["strategies={fecd: {estimation: none}}",
                                               "seeds=[0]"]))[0]
    assert ablated.hparams["estimation"] == "none" and ablated.hash != kd[ablated.id]
    cell = cells["synth-tiny__l2_kd__seed0"]
    with pytest.raises(ValueError, match="frozen"):
        cell.seed = 3
    with pytest.raises(ValueError, match="frozen"):
        cell.training.lr = 1.0
    stored = json.loads(json.dumps(cell.as_dict()))
    assert stored["id"] == cell.id and stored["hash"] == cell.hash
    assert Cell.from_stored(stored) == cell and Cell.from_stored(stored).hash == cell.hash
    skipped = cell.without_files({"synth-fg": ["a.png"]})
    assert skipped.hash != cell.hash and cell.skip_files is None


def payload_values(result: dict) -> str:
    """Every value a cell computed (its payload less the wall-clock timings), as
    canonical JSON: equal strings are byte-identical numbers."""
    payload = {k: v for k, v in result["payload"].items() if k != "timings"}
    return json.dumps(payload, sort_keys=True)


def test_jobs_2_gives_the_same_numbers_as_jobs_1(smoke_store, jobs2_store):
    """The whole smoke matrix with --jobs 2 (two cells at once, each in its own worker)
    equals the --jobs 1 store in every value: every K, mAP@R, seen curves, summaries."""
    a, b = results(smoke_store), results(jobs2_store)
    assert set(a) == set(b) and len(a) == 4
    for cell in b:
        assert b[cell]["config"]["training"]["threads"] == 1
        assert payload_values(a[cell]) == payload_values(b[cell]), cell



def test_a_queued_cell_records_when_its_worker_started_it(jobs2_store):
    """With two workers and four cells, the third cell to start waits for a worker: its
    ``started`` is at or after the end of the earlier cell that worker ran (that cell's
    start plus its measured time), not the moment all four were submitted (which every
    cell recorded before: the MLflow and W&B runs' start times were all the same)."""
    cells = sorted(results(jobs2_store).values(), key=lambda r: r["started"])
    assert len(cells) == 4
    done = [r["started"] + r["payload"]["timings"]["total_s"] for r in cells[:2]]
    assert cells[2]["started"] >= min(done)
    assert all(r["started"] <= r["ended"] for r in cells)

def test_threads_are_a_setting_of_the_cell(tmp_path):
    """training.threads is the cell's (hashed, recorded), never the host's or --jobs':
    the torch thread count inside a cell is exactly the setting."""
    import torch

    import benchmarks.run.cell as cell_mod

    assert all(c.training.threads == 1 for c in expand_cells(load_config(SMOKE, FAST)))
    two = {c.id: c.hash for c in expand_cells(load_config(
        SMOKE, [*FAST, "training.threads=2"]))}
    one = {c.id: c.hash for c in expand_cells(load_config(SMOKE, FAST))}
    assert all(two[c] != one[c] for c in one)
    seen = []
    real = cell_mod._run_cell

    def spy(cell, *args):
        seen.append(torch.get_num_threads())
        return real(cell, *args)

    before = torch.get_num_threads()
    with mock.patch.object(cell_mod, "_run_cell", spy):
        cell_mod.run_cell(expand_cells(load_config(
            SMOKE, ["training.iterations=1", "training.threads=3", "seeds=[0]"]))[0])
    assert seen == [3] and torch.get_num_threads() == before


def test_ray_executor_gives_the_same_numbers(smoke_store, ray_store):
    a, b = results(smoke_store), results(ray_store)
    assert set(a) == set(b) and len(a) == 4
    for cell in b:
        assert payload_values(a[cell]) == payload_values(b[cell]), cell


def test_submitit_local_executor_gives_the_numbers_of_jobs_1(smoke_store, tmp_path):
    """--executor submitit on submitit's local executor (a subprocess per job, the code
    path of a SLURM job): every value equals --jobs 1's, the logs come back with the
    results, and submitit's files stay in the store's submitit/ folder. One seed (a cell
    of each strategy): each job pays a Python, torch and Avalanche start-up."""
    pytest.importorskip("submitit")
    store = tmp_path / "submitit"
    counts = run_matrix(load_config(SMOKE, [*FAST, "slurm.cluster=local", "seeds=[0]"]),
                        store, jobs=2, executor="submitit", progress=False)
    assert counts["finished"] == 2 and counts["failed"] == 0
    a, b = results(smoke_store), results(store)
    assert set(b) == {"synth-tiny__finetune__seed0", "synth-tiny__l2_kd__seed0"}
    for cell in b:
        assert payload_values(a[cell]) == payload_values(b[cell]), cell
        assert "experience 2 of 0-2 trained" in (store / "cells" / cell / "log.txt").read_text()
    assert len(list((store / "submitit").glob("*_result.pkl"))) == 2


def test_submitit_job_that_dies_is_a_failed_cell():
    """A job killed by the scheduler (time limit, memory) is recorded as a failed cell
    naming the job and its log, not an exception that stops the matrix."""
    from benchmarks.run.executors import _job_outcome

    class Dead:
        job_id = "4242_3"

        class paths:  # noqa: N801 (submitit's attribute name)
            stderr = Path("/cluster/submitit/4242_3_0_log.err")

        def result(self):
            raise RuntimeError("Job 4242_3 (task: 0) with path ... has not produced any "
                               "output (state: TIMEOUT)")

    out = _job_outcome(Dead())
    assert out["status"] == "failed" and "submitit job 4242_3 failed" in out["reason"]
    assert "TIMEOUT" in out["reason"] and "4242_3_0_log.err" in out["reason"]


def test_slurm_settings_become_the_jobs_parameters():
    from benchmarks.run.executors import _job_parameters

    cells = expand_cells(load_config(SMOKE, [*FAST, "training.threads=2"]))
    slurm = load_config(SMOKE, ["slurm.partition=gpu", "slurm.time_min=30",
                                "slurm.mem_gb=16"]).slurm.model_dump()
    params = _job_parameters(cells, slurm)
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 30
    assert params["mem_gb"] == 16 and params["cpus_per_task"] == 2
    assert params["gpus_per_node"] == 0
    cuda = [c.model_copy(update={"training": c.training.model_copy(update={"device": "cuda"})})
            for c in cells]
    assert _job_parameters(cuda, {**slurm, "cpus": 8})["gpus_per_node"] == 1
    assert _job_parameters(cuda, {**slurm, "cpus": 8})["cpus_per_task"] == 8


def test_second_runner_is_refused(tmp_path, capsys):
    store = tmp_path / "locked"
    store.mkdir()
    with store_lock(store):  # held by this (live) process: another runner must stay out
        assert main(["run", str(SMOKE), "--out", str(store), "--set", "seeds=[0]"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]
    assert "in use by another lrbench run" in err and not list(store.glob("cells/*"))
    assert lock_free(store)
    # a holder recorded by a dead runner of this host is cleared
    (store / ".lock.owner").write_text(f"999999999 {socket.gethostname()}\n")
    with store_lock(store):
        assert (store / ".lock.owner").read_text().split() == [str(os.getpid()),
                                                               socket.gethostname()]
    assert lock_free(store)


def test_a_holder_on_another_host_is_never_taken_for_stale(tmp_path):
    """On a shared disk whose file locks do not reach another host, the owner record keeps
    that host's runner out: its pid cannot be checked from here, so the lock is refused
    (naming the host and the file to delete), never stolen."""
    store = tmp_path / "shared"
    store.mkdir()
    record = f"{os.getpid()} other-host.example\n"
    (store / ".lock.owner").write_text(record)
    with pytest.raises(LrbenchError, match="held by an lrbench run on host 'other-host"
                                           r".example' \(pid \d+\); .* delete"), store_lock(store):
        pass
    assert (store / ".lock.owner").read_text() == record  # not removed: not ours
    # a runner under another host name while this one holds the store: the OS lock
    # refuses it first (where file locks reach across hosts, they do that job)
    (store / ".lock.owner").unlink()
    with store_lock(store), \
            mock.patch("benchmarks.run.store.lock.hostname", return_value="b-host"), \
            pytest.raises(LrbenchError, match="in use by another lrbench run"), \
            store_lock(store):
        pass
    assert lock_free(store)
    (store / ".lock").unlink()
    (store / ".lock").mkdir()
    with pytest.raises(LrbenchError, match="is a folder, not lrbench's lock file"), \
            store_lock(store):
        pass


def _race_for_the_lock(store: str, start: Any, release: Any, outcomes: Any) -> None:
    """One contender: wait at the barrier, try the lock, report, hold it until released."""
    start.wait()
    try:
        with store_lock(Path(store)):
            outcomes.put("held")
            release.wait()
    except LrbenchError:
        outcomes.put("refused")


def test_two_runners_released_by_a_barrier_never_both_hold_the_lock(tmp_path):
    """Two processes released together by a barrier, 50 rounds: exactly one holds the
    store each time. The holder keeps it until both have reported, so the other's try
    provably happens while it is held (no clock involved)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for round_ in range(50):
        store = tmp_path / f"round{round_}"
        store.mkdir()
        start, release, outcomes = ctx.Barrier(2), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_race_for_the_lock,
                             args=(str(store), start, release, outcomes)) for _ in range(2)]
        for p in procs:
            p.start()
        got = sorted(outcomes.get(timeout=HANG_S) for _ in procs)
        release.set()
        for p in procs:
            p.join(HANG_S)
            assert p.exitcode == 0
        assert got == ["held", "refused"], (round_, got)
        assert lock_free(store)


@pytest.fixture
def gate(tmp_path, monkeypatch):
    """The test-only ``gate`` strategy (tests/gate_plugin.py): registered here, and an
    entry point for subprocesses through ``env``. Returns ``(gate folder, env)``."""
    import strategies.registry as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    import gate_plugin

    register = registry.register_strategy("gate")
    register(gate_plugin.Gate)
    folder = tmp_path / "gate"
    folder.mkdir()
    site = gate_plugin.install_gate(tmp_path / "gate-site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return folder, env


def gated_matrix(folder: Path) -> list[str]:
    """--set flags: finetune and ``gate`` (which stops at experience 1 of its cell until
    released), seed 0, 3 iterations."""
    return ["--set", "training.iterations=3", "--set", "seeds=[0]", "--set",
            f"strategies={{finetune: {{}}, gate: {{dir: {str(folder)!r}}}}}"]


def check_resumed(store: Path, folder: Path, smoke_store: Path, kept: dict) -> None:
    """Release the gate, rerun in this process: the kept cells are skipped byte for byte,
    the gated one finishes, and every value equals an uninterrupted run's (``gate`` trains
    like ``finetune``)."""
    (folder / "release").touch()
    config = load_config(SMOKE, [*FAST, "seeds=[0]", "strategies={finetune: {}, gate: "
                                 f"{{dir: {str(folder)!r}}}}}"])
    counts = run_matrix(config, store, progress=False)
    assert counts["skipped"] == len(kept) and counts["finished"] == 2 - len(kept)
    assert {p: p.read_bytes() for p in kept} == kept
    final, ref = results(store), results(smoke_store)
    assert set(final) == {"synth-tiny__finetune__seed0", "synth-tiny__gate__seed0"}
    for cell in final:
        assert final[cell]["status"] == "finished"
        assert same_values(final[cell], ref["synth-tiny__finetune__seed0"]), cell


def same_values(a: dict, b: dict) -> bool:
    """Every metric value of two results (R matrices, seen curves, summaries) equal."""
    return all(a["payload"][s] == b["payload"][s] for s in ("r_matrix", "seen", "summary"))


def test_kill_9_then_rerun_keeps_finished_cells(smoke_store, tmp_path, gate):
    """kill -9 while the second cell is provably mid-run (held at its gate): the first
    cell's result is kept, nothing half-written is left, and a rerun completes."""
    folder, env = gate
    from gate_plugin import wait_for

    store, log = tmp_path / "killed", tmp_path / "killed.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", str(SMOKE),
                                 "--out", str(store), *gated_matrix(folder)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(folder / "started-seed0", proc, log)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    done = {p: p.read_bytes() for p in store.glob("cells/*/result.json")}
    assert [p.parent.name for p in done] == ["synth-tiny__finetune__seed0"]
    assert not list(store.glob("cells/*/.*.tmp")) and not list(store.glob(".*.tmp"))
    check_resumed(store, folder, smoke_store, done)


def test_failed_cell_is_recorded_and_the_matrix_goes_on(tmp_path, monkeypatch):
    import benchmarks.run.cell as cell_mod

    real = cell_mod.run_cell

    def flaky(cell, *args, **kwargs):
        if cell.strategy == "l2_kd" and cell.seed == 0:
            raise FloatingPointError("loss is nan in experience 1")
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(cell_mod, "run_cell", flaky)
    counts = run_matrix(load_config(SMOKE, [*FAST, "seeds=[0]"]), tmp_path / "s",
                        progress=False)
    assert counts == {"finished": 1, "skipped": 0, "failed": 1, "rows": 48 + 9}  # + losses
    bad = results(tmp_path / "s")["synth-tiny__l2_kd__seed0"]
    assert bad["status"] == "failed" and bad["reason"].startswith("FloatingPointError: loss")
    log = (tmp_path / "s" / "cells" / "synth-tiny__l2_kd__seed0" / "log.txt").read_text()
    assert "Traceback" in log


def test_exception_inside_a_plugin_is_recorded_with_its_traceback(tmp_path, monkeypatch):
    """A plugin that raises in ``before_backward`` fails its cell (reason and traceback
    recorded); the other strategy's cells still finish."""
    from avalanche.core import SupervisedPlugin

    import strategies.registry as registry
    from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_strategy("raises_in_plugin")
    class RaisesInPlugin(StrategyPlugin, SupervisedPlugin):
        class Config(StrategyConfig):
            pass

        def __init__(self, config: StrategyConfig | None = None) -> None:
            super().__init__()
            self.config = config or self.Config()

        def before_backward(self, strategy, **kwargs):
            raise RuntimeError("plugin bug in before_backward")

    config = load_config(SMOKE, [*FAST, "seeds=[0]", "strategies={finetune: {}, "
                                 "raises_in_plugin: {}}"])
    counts = run_matrix(config, tmp_path / "s", progress=False)
    assert counts["finished"] == 1 and counts["failed"] == 1
    bad = results(tmp_path / "s")["synth-tiny__raises_in_plugin__seed0"]
    assert bad["status"] == "failed"
    assert bad["reason"] == "RuntimeError: plugin bug in before_backward"
    log = (tmp_path / "s" / "cells" / "synth-tiny__raises_in_plugin__seed0" / "log.txt")
    assert "Traceback" in log.read_text() and "in before_backward" in log.read_text()


@pytest.mark.parametrize("text, needle", [
    ("name: x\nseeds: [0]\nscenarios: [synth-ci]\nstrategies: {finetune: {}}\ntraning: {}\n",
     "unknown key 'traning'. Did you mean 'training'?"),
    ("name: x\nseeds: []\nscenarios: [synth-ci]\nstrategies: {finetune: {}}\n", "seeds"),
    ("name: x\nseeds: [0]\nscenarios: [synth-ci]\nstrategies: {finetune: {}}\n"
     "training: {p: many}\n", "training.p"),
    ("name: x\nseeds: [0]\nscenarios: [synth-ci]\nstrategies: {finetune: {}}\n"
     "evaluation: {ks: [0, 1]}\n", "positive"),
    ("name: x\nseeds: [0]\nscenarios: [synth-cj]\nstrategies: {finetune: {}}\n",
     "Did you mean 'synth-ci'"),
    ("name: x\nseeds: [0]\nscenarios: [synth-ci]\nstrategies: {lwf: {lam: -1}}\n", "'lam'"),
    ("name: x\nseeds: [0\nscenarios: [synth-ci]\n", "line"),
])
def test_bad_matrix_files_are_one_line_errors(tmp_path, capsys, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_avalanche_loggers_write_into_the_cell_folder(tmp_path):
    config = load_config(SMOKE, [*FAST, "seeds=[0]", "strategies={finetune: {}}",
                                 "logging.tensorboard=true", "logging.csv=true"])
    base = {c.id: c.hash for c in expand_cells(load_config(SMOKE, FAST))}
    assert all(base[c.id] == c.hash for c in expand_cells(config))  # not in the hash
    run_matrix(config, tmp_path / "logs", progress=False)
    cell = tmp_path / "logs" / "cells" / "synth-tiny__finetune__seed0"
    assert list((cell / "tensorboard").glob("events.out.tfevents.*"))
    assert (cell / "avalanche_csv").is_dir()


def test_per_strategy_training_overrides():
    config = parse_config({"name": "x", "seeds": [0], "scenarios": ["synth-ci"],
                           "training": {"lr": 0.01},
                           "strategies": {"finetune": {}, "lwf": {"training": {"lr": 0.5}}}})
    lr = {c.strategy: c.training.lr for c in expand_cells(config)}
    assert lr == {"finetune": 0.01, "lwf": 0.5}


def run_with_bomb(tmp_path, term):
    """Run the smoke matrix with a test-only plugin adding ``term(strategy)`` to the loss at
    iteration 2 of experience 1; return that cell's result.json."""
    from avalanche.core import SupervisedPlugin

    from strategies import StrategyConfig, StrategyPlugin, register_strategy
    from strategies.registry import _REGISTRY

    @register_strategy("bomb_at_1_2")
    class BombAt(StrategyPlugin, SupervisedPlugin):
        """Test only: a bad loss term at iteration 2 of experience 1."""

        class Config(StrategyConfig):
            pass

        def __init__(self, config=None):
            super().__init__()
            self.i = 0

        def before_training_exp(self, strategy, **kwargs):
            self.i = 0

        def before_backward(self, strategy, **kwargs):
            if strategy.experience.current_experience == 1 and self.i == 2:
                strategy.add_loss("bomb", term(strategy))
            self.i += 1

    try:
        config = load_config(SMOKE, [*FAST, "seeds=[0]", "strategies={bomb_at_1_2: {}}"])
        counts = run_matrix(config, tmp_path / "bomb", progress=False)
    finally:
        _REGISTRY.pop("bomb_at_1_2", None)  # a test-only strategy: keep the registry clean
    assert counts["failed"] == 1
    return results(tmp_path / "bomb")["synth-tiny__bomb_at_1_2__seed0"]


def test_non_finite_loss_fails_the_cell_at_its_step(tmp_path):
    import torch

    bad = run_with_bomb(tmp_path, lambda s: torch.tensor(float("nan")))
    assert bad["reason"] == ("FloatingPointError: loss is nan at iteration 2 of experience 1 "
                             "(non-finite term: bomb)")
    assert "Traceback" in (tmp_path / "bomb" / "cells" / bad["id"] / "log.txt").read_text()


def test_exploding_gradient_fails_the_cell_at_its_step(tmp_path):
    bad = run_with_bomb(tmp_path, lambda s: 1e9 * s.mb_output[:, 0].sum())
    assert bad["reason"].startswith("FloatingPointError: gradient norm ")
    assert "at iteration 2 of experience 1 exceeds max_grad_norm = 10000" in bad["reason"]


def test_check_determinism_runs_one_cell_twice(tmp_path, capsys):
    argv = ["run", str(SMOKE), "--out", str(tmp_path / "untouched"), "--check-determinism",
            "--set", "training.iterations=2", "--set", "seeds=[1]"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "synth-tiny__finetune__seed1: two runs gave identical metric values" in out
    assert "against" not in out  # no store: nothing to compare with
    assert not (tmp_path / "untouched").exists()


def test_check_determinism_compares_with_the_stores_result(smoke_store, tmp_path, capsys):
    """With the cell finished in the store, the fresh run is compared with it too, naming
    the commit and CPU that wrote it: identical here; a stored value changed in its last
    bit (as another CPU's rounding would) is caught, exit 1, and the store is untouched."""
    import shutil

    from benchmarks.run.provenance import machine
    from benchmarks.run.store import machine_label

    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    argv = ["run", str(SMOKE), "--out", str(store), "--check-determinism",
            *(a for s in SMOKE_FAST for a in ("--set", s)), "--set", "seeds=[1]"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"synth-tiny__finetune__seed1: against {store}'s result (commit "
            in out) and out.rstrip().endswith(": identical metric values")
    assert f"{machine_label(machine())}; this machine: {machine_label(machine())})" in out
    path = store / "cells" / "synth-tiny__finetune__seed1" / "result.json"
    cell = json.loads(path.read_text())
    value = cell["payload"]["seen"]["recall"]["1"][-1]
    cell["payload"]["seen"]["recall"]["1"][-1] = math.nextafter(value, 2.0)
    path.write_text(json.dumps(cell))
    before = path.read_bytes()
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "differs: store: seen: " in out and "two runs gave identical metric values" in out
    assert out.rstrip().endswith("'s result (commit " + cell["versions"]["lrbench_commit"][:10]
                                 + f", {machine_label(cell['host'])}; this machine: "
                                 f"{machine_label(machine())}): 1 differing sections")
    assert path.read_bytes() == before
    # a store without the cell's result: said in one line, only the two runs compared
    path.unlink()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"synth-tiny__finetune__seed1: not compared with {store}: it holds no "
            "result.json for the cell") in out and "against" not in out


def interrupt_gated_run(store: Path, folder: Path, env: dict, sig: int,
                        executor: tuple[str, ...] = ()) -> tuple[int, str, list]:
    """Run the gated matrix with --jobs 2 (on the ``executor`` flags' executor), wait until
    finetune's cell has finished and the gate holds the other mid-run, send ``sig``; return
    the exit code, the run's stderr and the worker processes it had (psutil) when the
    signal was sent."""
    import psutil
    from gate_plugin import wait_for

    log = store.with_suffix(".log")
    with open(log, "w") as err:
        # a command started in the background of a script inherits SIGINT ignored (as CI
        # may start this suite): the run gets the default disposition, as in a terminal
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", str(SMOKE),
                                 "--out", str(store), "--jobs", "2", *gated_matrix(folder),
                                 *executor],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            wait_for(folder / "started-seed0", proc, log)
            wait_for(store / "cells" / "synth-tiny__finetune__seed0" / "result.json", proc,
                     log)
            workers = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(sig)
            proc.wait(timeout=HANG_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, log.read_text(), workers


def check_stopped_cleanly(store: Path, folder: Path, smoke_store: Path) -> None:
    """The finished cell kept, the lock released, the tidy table written, and the store
    resumes to an uninterrupted run's values."""
    assert lock_free(store) and (store / "results.csv").is_file()
    kept = {p: p.read_bytes() for p in store.glob("cells/*/result.json")}
    assert [p.parent.name for p in kept] == ["synth-tiny__finetune__seed0"]
    check_resumed(store, folder, smoke_store, kept)


def test_first_sigint_stops_cleanly_and_the_store_resumes(smoke_store, tmp_path, gate):
    """Ctrl-C with --jobs 2 while one cell has finished and the other is provably mid-run
    (held at its gate): exit 130, the finished cell kept, the lock released, the tidy
    table written, and the store resumes to an uninterrupted run's values."""
    folder, env = gate
    store = tmp_path / "interrupted"
    code, text, _ = interrupt_gated_run(store, folder, env, signal.SIGINT)
    assert code == 130, text[-2000:]
    assert "interrupted: finished cells are kept" in text and "Traceback" not in text
    check_stopped_cleanly(store, folder, smoke_store)


def test_sigterm_stops_like_ctrl_c_and_leaves_no_worker(smoke_store, tmp_path, gate):
    """SIGTERM (a scheduler's kill) with --jobs 2 while one cell has finished and the
    other is held mid-run: the workers are stopped (none outlives the run), the finished
    cell is kept, the lock released, exit 143, and the store resumes."""
    import psutil

    folder, env = gate
    store = tmp_path / "terminated"
    code, text, workers = interrupt_gated_run(store, folder, env, signal.SIGTERM)
    assert workers  # the pool's processes, one of them held at the gate
    assert code == 143, text[-2000:]
    assert "lrbench: terminated" in text and "Traceback" not in text
    _, alive = psutil.wait_procs(workers, timeout=HANG_S)
    assert not alive, alive
    check_stopped_cleanly(store, folder, smoke_store)


def test_sigterm_cancels_the_submitit_jobs(smoke_store, tmp_path, gate):
    """SIGTERM under --executor submitit (submitit's local executor: a process per job)
    while one cell has finished and the other's job is held mid-run: the jobs still running
    are cancelled (no process outlives the run), the finished cell is kept, exit 143."""
    import psutil

    pytest.importorskip("submitit")
    folder, env = gate
    store = tmp_path / "terminated"
    code, text, workers = interrupt_gated_run(
        store, folder, env, signal.SIGTERM, ("--executor", "submitit", "--slurm-cluster",
                                             "local"))
    assert workers  # the job held at the gate, and its submitit controller
    assert code == 143, text[-2000:]
    assert "lrbench: terminated" in text and "Traceback" not in text
    _, alive = psutil.wait_procs(workers, timeout=HANG_S)
    assert not alive, alive
    check_stopped_cleanly(store, folder, smoke_store)


def test_second_sigint_during_the_flush_stops_at_once_and_the_store_resumes(
        smoke_store, tmp_path, monkeypatch):
    """Ctrl-C while the second cell trains, then Ctrl-C again while the first one's
    flush rebuilds the tidy table: the run stops there, the lock is released, the finished
    cell is kept, and a rerun completes with an uninterrupted run's values."""
    import benchmarks.run.cell as cell_mod
    import benchmarks.runner as runner

    real_cell, real_tidy = cell_mod.run_cell, runner.write_tidy
    started = []

    def second_cell_interrupted(cell, *args, **kwargs):
        started.append(cell.id)
        if len(started) == 2:
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C
        return real_cell(cell, *args, **kwargs)

    def flush_interrupted(store, cells=None):
        raise KeyboardInterrupt  # the second Ctrl-C, during the flush

    monkeypatch.setattr(cell_mod, "run_cell", second_cell_interrupted)
    monkeypatch.setattr(runner, "write_tidy", flush_interrupted)
    store = tmp_path / "twice"
    one_seed = [*FAST, "seeds=[0]"]
    with pytest.raises(KeyboardInterrupt):
        run_matrix(load_config(SMOKE, one_seed), store, progress=False)
    assert lock_free(store) and not (store / "results.csv").exists()
    assert [p.parent.name for p in store.glob("cells/*/result.json")] == started[:1]
    kept = (store / "cells" / started[0] / "result.json").read_bytes()
    monkeypatch.setattr(cell_mod, "run_cell", real_cell)
    monkeypatch.setattr(runner, "write_tidy", real_tidy)
    counts = run_matrix(load_config(SMOKE, one_seed), store, progress=False)
    assert counts["skipped"] == 1 and counts["finished"] == 1
    assert (store / "cells" / started[0] / "result.json").read_bytes() == kept
    final, ref = results(store), results(smoke_store)
    assert set(final) == {c for c in ref if c.endswith("seed0")}
    assert {c: final[c]["payload"]["r_matrix"] for c in final} == {
        c: ref[c]["payload"]["r_matrix"] for c in final}
    rows = (smoke_store / "results.csv").read_text().splitlines()
    assert (store / "results.csv").read_text().splitlines() == [
        r for r in rows if r.startswith("scenario,") or r.split(",")[2] == "0"]


@pytest.mark.slow
def test_kill_9_at_five_random_moments(smoke_store, tmp_path):
    """Five times: start the smoke matrix, kill -9 it at a random moment after it took its
    store, rerun; the rerun completes and every value equals an uninterrupted run's."""
    import random

    rng = random.Random(7)
    ref = results(smoke_store)
    for trial in range(5):
        store = tmp_path / f"trial{trial}"
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", str(SMOKE),
                                 "--out", str(store), "--set", "training.iterations=3"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and not (store / ".lock.owner").exists():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not list(store.glob("cells/*/.*.tmp")) and not list(store.glob(".*.tmp"))
        counts = run_matrix(load_config(SMOKE, FAST), store, progress=False)
        assert counts["failed"] == 0 and counts["finished"] + counts["skipped"] == 4
        final = results(store)
        assert set(final) == set(ref)
        for cell in final:
            assert final[cell]["payload"]["r_matrix"] == ref[cell]["payload"]["r_matrix"]
            assert final[cell]["payload"]["seen"] == ref[cell]["payload"]["seen"]


def _cub_matrix(tmp: Path) -> tuple[Any, Path]:
    """A tiny CUB tree (4 classes, 3 train + 3 test images each) whose first train image
    is truncated, and a one-cell matrix over it."""
    from conftest import truncate
    from test_datasets import make_cub

    cub = make_cub(tmp, class_ids=(3, 7, 12, 15), per_class=6)
    bad = cub / "images" / "003.Bird_3" / "Bird_3_0000.jpg"
    truncate(bad)
    config = parse_config({
        "name": "cub-tiny", "seeds": [0], "data_root": str(cub),
        "scenarios": [{"name": "cub-tiny", "dataset": "cub200", "schedule": "2+2",
                       "image_size": 32}],
        "model": {"trunk": "small_cnn", "dim": 16, "pool": "avg"},
        "training": {"p": 2, "k": 2, "iterations": 2, "eval_mb_size": 32},
        "strategies": {"finetune": {}}, "evaluation": {"ks": [1]},
        "cache": {"dir": str(tmp / "cache")},
    })
    return config, bad


def test_corrupt_image_refuses_the_matrix_before_anything_is_written(tmp_path):
    config, _ = _cub_matrix(tmp_path)
    with pytest.raises(LrbenchError) as err:
        run_matrix(config, tmp_path / "store", progress=False)
    msg = str(err.value)
    assert "1 in cub200 (images/003.Bird_3/Bird_3_0000.jpg)" in msg and "--skip-corrupt" in msg
    assert "\n" not in msg and not (tmp_path / "store").exists()


def test_an_unusable_out_is_refused_before_names_or_data_are_checked(tmp_path, monkeypatch,
                                                                    capsys):
    """A file where --out (or a folder above it) should be is refused before the
    strategies are imported or the images checked (those take minutes on real data), and
    nothing is created; a folder that can be made passes the check and is not made by it."""
    import benchmarks.config as config_mod
    import benchmarks.run.preflight as preflight
    from benchmarks.run.store import check_out_folder

    def never(*args, **kwargs):
        raise AssertionError("checked before --out")

    monkeypatch.setattr(config_mod, "check_names", never)  # both imported by the command
    monkeypatch.setattr(preflight, "check_data", never)    # when it runs: patched here
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "a" / "b"):
        assert main(["run", str(SMOKE), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{str(tmp_path / 'file')!r} is not a folder" in err
        assert "remove or rename that file" in err
    monkeypatch.undo()  # the dry run checks names and data first: it lists every cell
    assert main(["run", str(SMOKE), "--dry-run", "--out", str(tmp_path / "file" / "a")]) == 2
    assert "the run would be refused: cannot write to results folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    check_out_folder(tmp_path / "new" / "deeper")  # creatable: no error
    assert not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # root may write anywhere chmod forbids
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(LrbenchError, match="no permission to write in"):
            check_out_folder(tmp_path / "ro" / "store")


def test_skip_corrupt_leaves_the_file_out_and_records_it(tmp_path, monkeypatch, capsys):
    import benchmarks.datasets as datasets
    from benchmarks.run.cell import build_benchmark
    from benchmarks.run.preflight import find_corrupt

    config, bad = _cub_matrix(tmp_path)
    rel = "images/003.Bird_3/Bird_3_0000.jpg"
    counts = run_matrix(config, tmp_path / "store", progress=False, skip_corrupt=True)
    assert counts["finished"] == 1 and counts["failed"] == 0
    assert json.loads((tmp_path / "store" / "skipped.json").read_text())["cub200"][0][
        "path"] == rel
    (cell,) = results(tmp_path / "store").values()
    assert cell["config"]["skip_files"] == {"cub200": [rel]}
    # the dry run sees the finished cell as done (its cells leave out the stored broken files)
    (tmp_path / "m.yaml").write_text((tmp_path / "store" / "matrix.yaml").read_text())
    capsys.readouterr()
    for flags, status in (([], "will run"), (["--skip-corrupt"], "done")):
        assert main(["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "store"),
                     "--dry-run", *flags]) == 0
        assert capsys.readouterr().out.splitlines()[0].endswith(status)
    plain = expand_cells(config)[0]
    assert cell["config_hash"] != plain.hash  # without an image it is another cell
    stored = Cell.from_stored(cell["config"])
    trains = [e.train_images for e in build_benchmark(stored, info_only=True).experiences]
    assert trains == [5, 6] == [t - (i == 0) for i, t in enumerate(
        e.train_images for e in build_benchmark(plain, info_only=True).experiences)]

    # the decode check is kept per file set: nothing is decoded again ...
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(datasets, "check_images", no_decoding)
    assert find_corrupt([plain], progress=False) == {"cub200": [(rel, mock.ANY)]}
    monkeypatch.undo()
    # ... until a file changes: the repaired image is checked anew and the cell reruns whole
    from conftest import write_image

    write_image(bad, seed=99)
    assert find_corrupt([plain], progress=False) == {}
    counts = run_matrix(config, tmp_path / "store", progress=False, skip_corrupt=True)
    assert counts["finished"] == 1 and not (tmp_path / "store" / "skipped.json").exists()
    assert "skip_files" not in next(iter(results(tmp_path / "store").values()))["config"]


def test_strategy_variants_run_under_their_own_label(tmp_path):
    """``lam10: {strategy: l2_kd, lam: 10}`` is l2_kd with other hyperparameters, a cell of
    its own beside plain l2_kd; the plain strategy's hash does not change."""
    base = [*FAST, "seeds=[0]"]
    plain = {c.id: c for c in expand_cells(load_config(SMOKE, base))}
    config = load_config(SMOKE, [*base, "strategies={l2_kd: {lam: 1.0}, "
                                         "lam10: {strategy: l2_kd, lam: 10.0}}"])
    cells = {c.id: c for c in expand_cells(config)}
    var = cells["synth-tiny__lam10__seed0"]
    assert var.plugin == "l2_kd" and var.hparams == {"lam": 10.0}
    assert cells["synth-tiny__l2_kd__seed0"].hash == plain["synth-tiny__l2_kd__seed0"].hash
    assert "plugin" not in cells["synth-tiny__l2_kd__seed0"].as_dict()
    counts = run_matrix(config, tmp_path / "s", progress=False)
    assert counts["finished"] == 2
    res = results(tmp_path / "s")
    a, b = (res[f"synth-tiny__{n}__seed0"]["payload"]["r_matrix"] for n in ("l2_kd", "lam10"))
    assert a != b  # the variant's weight changed the training
    with pytest.raises(LrbenchError, match="unknown strategy 'l2kd'"):
        load_config(SMOKE, [*base, "strategies={v: {strategy: l2kd}}"])
    with pytest.raises(LrbenchError, match="strategies.v"):
        load_config(SMOKE, [*base, "strategies={v: {strategy: l2_kd, lamb: 1}}"])


def test_rerun_before_recomputes_cells_of_older_commits(smoke_store, tmp_path):
    """--rerun-before COMMIT recomputes the cells an older commit (an ancestor of COMMIT,
    or one git cannot place) computed, and keeps the others byte for byte."""
    import shutil

    store = tmp_path / "mixed"
    shutil.copytree(smoke_store, store)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    parent = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    cells = sorted((store / "cells").glob("*/result.json"))
    for path, commit in zip(cells, [parent, "0" * 40, head, head], strict=True):
        res = json.loads(path.read_text())
        res["versions"]["lrbench_commit"] = commit
        path.write_text(json.dumps(res))
    kept = {p: p.read_bytes() for p in cells[2:]}
    counts = run_matrix(load_config(SMOKE, FAST), store, progress=False, rerun_before=head)
    assert counts["finished"] == 2 and counts["skipped"] == 2
    assert {p: p.read_bytes() for p in kept} == kept
    for path in cells[:2]:  # recomputed: the same numbers, today's commit
        new, ref = json.loads(path.read_text()), results(smoke_store)[path.parent.name]
        assert same_values(new, ref) and new["versions"]["lrbench_commit"] != "0" * 40
    with pytest.raises(LrbenchError, match="--rerun-before: 'no-such-commit' is not a commit"):
        run_matrix(load_config(SMOKE, FAST), store, progress=False,
                   rerun_before="no-such-commit")


@pytest.mark.parametrize("name", ["../../victim/cells/synth-tiny", "../../../escaped",
                                  "/tmp/absolute", "a/b", ".", "..", "x" * 300, "a__finetune",
                                  "", "-flag", "name with space"])
@pytest.mark.parametrize("where", ["scenario", "matrix"])
def test_no_name_can_make_a_path_outside_its_folder(name, where, tmp_path):
    """Scenario and matrix names become folders: traversal, absolute, nested, dot,
    overlong and separator-holding names are refused when the matrix is read."""
    data = {"name": "ok", "seeds": [0], "strategies": {"finetune": {}},
            "scenarios": [{"name": "fine", "dataset": "synth-fg", "schedule": "4+4"}]}
    if where == "scenario":
        data["scenarios"][0]["name"] = name
    else:
        data["name"] = name
    with pytest.raises(LrbenchError, match="cannot name a folder|should match|at least"):
        parse_config(data)


def test_cell_ids_are_unique_by_construction():
    """``a__finetune`` x ``finetune`` and ``a`` x ``finetune__finetune`` would both be
    ``a__finetune__finetune__seed0``: neither name is accepted."""
    base = {"name": "ok", "seeds": [0],
            "scenarios": [{"name": "a", "dataset": "synth-fg", "schedule": "4+4"}]}
    with pytest.raises(LrbenchError, match="strategy label 'finetune__finetune'"):
        expand_cells(parse_config({**base, "strategies": {
            "finetune__finetune": {"strategy": "finetune"}}}))
    ids = [c.id for c in expand_cells(parse_config({**base, "seeds": [0, 1], "strategies": {
        "finetune": {}, "ft-b": {"strategy": "finetune"}}}))]
    assert len(ids) == len(set(ids)) == 4


def test_the_cli_checks_a_matrix_once(tmp_path, monkeypatch, capsys):
    """lrbench run checks the data, the store and --rerun-before once, before the runner
    (which takes what was checked), not a second time inside it."""
    import benchmarks.config as config
    import benchmarks.run.preflight as preflight
    import benchmarks.run.store as store
    import benchmarks.runner as runner

    calls: dict[str, int] = {}
    for module, name in [(config, "expand_cells"), (preflight, "check_data"),
                         (preflight, "find_corrupt"), (store, "prepare_store"),
                         (store, "older_than")]:
        real = getattr(module, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
        if hasattr(runner, name):  # the runner's own name for it, if it has one
            monkeypatch.setattr(runner, name, spy)
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "s"), "--rerun-before", "HEAD",
                 "--set", "training.iterations=1", "--set", "seeds=[0]"]) == 0
    assert "2 finished" in capsys.readouterr().out
    assert calls == {"expand_cells": 1, "check_data": 1, "find_corrupt": 1,
                     "prepare_store": 1, "older_than": 1}


def shared_and_alone(config: Any, tmp_path: Path, n: int) -> tuple[dict, dict, dict]:
    """``config`` run twice, sharing what its cells may share and not (``share_first``):
    both stores' results, checked to hold ``n`` cells with bit-identical values, and the
    shared run's timings per strategy."""
    run_matrix(config, tmp_path / "shared", progress=False)
    run_matrix(config, tmp_path / "alone", progress=False, share_first=False)
    shared, alone = results(tmp_path / "shared"), results(tmp_path / "alone")
    assert set(shared) == set(alone) and len(shared) == n
    for cell in shared:
        assert payload_values(shared[cell]) == payload_values(alone[cell]), cell
        timings = alone[cell]["payload"]["timings"]
        assert not timings["shared_first_experience"] and timings["shared_training"] == []
    return shared, alone, {r["config"]["strategy"]: r["payload"]["timings"]
                           for r in shared.values()}


def test_variants_share_a_first_experience_only_where_it_cannot_change(tmp_path):
    """Cells that differ only in hyperparameters their strategy declares inactive in the
    first experience train it once (the first writes it, the second resumes from it), with
    every value bit-identical to training it again; a hyperparameter that acts there
    (lwf's ce_weight trains the classifier from the start) is never shared, and the
    shared checkpoints are gone when the run ends."""
    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="share", seeds=[0], strategies={
        "l2_kd": {"lam": 1.0}, "l2-strong": {"strategy": "l2_kd", "lam": 5.0},
        "lwf": {}, "lwf-ce": {"strategy": "lwf", "ce_weight": 0.5}})
    config = parse_config(data, "share.yaml", overrides=FAST)
    cells = {c.strategy: c for c in expand_cells(config)}
    assert cells["l2_kd"].first_experience_key == cells["l2-strong"].first_experience_key
    assert cells["l2_kd"].hash != cells["l2-strong"].hash
    assert cells["lwf"].first_experience_key != cells["lwf-ce"].first_experience_key
    # one left by a killed run (older code, perhaps) is never used: removed at the start
    from benchmarks.run.store import first_experience_path

    stale = first_experience_path(tmp_path / "shared", cells["l2_kd"].first_experience_key)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a checkpoint")
    _, _, took = shared_and_alone(config, tmp_path, 4)
    assert [s for s, t in took.items() if t["shared_first_experience"]] == ["l2-strong"]
    assert took["l2-strong"]["resumed_after"] == 1 and took["l2_kd"]["resumed_after"] == 0
    log = (tmp_path / "shared" / "cells" / "synth-tiny__l2-strong__seed0" / "log.txt")
    assert "first experience shared" in log.read_text()
    assert not (tmp_path / "shared" / "first").exists()


def test_drift_compensations_share_the_training_loops_of_what_they_wrap(tmp_path):
    """A drift compensation trains exactly as the strategy it wraps, whatever its own
    hyperparameters: cells that train alike run each experience's training loop once (the
    first writes its end state, the others load it and run only the drift estimate and the
    evaluation), with every value bit-identical to training alone; a wrapped strategy with
    state of its own (fecd's teacher and estimator, replay's buffer) included, and the
    shared loops gone when the run ends."""
    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="twins", seeds=[0], strategies={
        "finetune": {}, "sdc": {"sigma": 0.3}, "sdc-wide": {"strategy": "sdc", "sigma": 2.0},
        "ldc": {"epochs": 3}, "fecd": {}, "sdc-fecd": {"strategy": "sdc", "sdc_on": "fecd"},
        "replay": {"mem_size": 12}, "ldc-replay": {"strategy": "ldc", "ldc_on": "replay",
                       "on_params": {"mem_size": 12}}})
    config = parse_config(data, "twins.yaml", overrides=FAST)
    cells = {c.strategy: c for c in expand_cells(config)}
    keys = {name: c.training_key for name, c in cells.items()}
    assert keys["finetune"] == keys["sdc"] == keys["sdc-wide"] == keys["ldc"]
    assert keys["fecd"] == keys["sdc-fecd"] != keys["finetune"]
    assert keys["replay"] == keys["ldc-replay"]
    assert len({keys["replay"], keys["fecd"], keys["finetune"]}) == 3
    _, _, took = shared_and_alone(config, tmp_path, 8)
    # the first of each training (in matrix order) ran its loops; the rest loaded every one
    # they did not resume past (sdc-wide resumes from sdc's shared first experience); fecd
    # and replay loaded the first one only, finetune's (first_loop_as)
    assert {s for s, t in took.items() if t["shared_training"]} == set(cells) - {"finetune"}
    for name in ("sdc", "sdc-wide", "ldc", "sdc-fecd", "ldc-replay"):
        assert took[name]["shared_training"] == list(range(took[name]["resumed_after"], 3))
    assert took["fecd"]["shared_training"] == took["replay"]["shared_training"] == [0]
    log = (tmp_path / "shared" / "cells" / "synth-tiny__ldc__seed0" / "log.txt")
    assert "its training loop loaded, run by a cell that trains alike" in log.read_text()
    assert not (tmp_path / "shared" / "trained").exists()


def test_strategies_share_the_first_loop_they_train_as_finetune_does(tmp_path):
    """Strategies whose first experience's training loop is finetune's (no teacher,
    importances or buffer yet: ``first_loop_as``) run it once per seed across strategies,
    every value bit-identical to training alone; lwf (a classifier from the start) and the
    untrained reference never touch it. A file without plugin states is refused where
    the states belong (one strategy's own loops) and trained instead."""
    from benchmarks.run.cell import run_cell

    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="firsts", seeds=[0], strategies={
        "ewc": {}, "finetune": {}, "first_session": {}, "er_aml": {"mem_size": 12},
        "lwf": {}, "pretrained": {}})
    config = parse_config(data, "firsts.yaml", overrides=FAST)
    cells = {c.strategy: c for c in expand_cells(config)}
    keys = {name: c.first_loop_key for name, c in cells.items()}
    assert keys["lwf"] is None and keys["pretrained"] is None
    assert len({keys[n] for n in ("ewc", "finetune", "first_session", "er_aml")}) == 1
    assert len({c.training_key for c in cells.values()}) == len(cells)
    _, _, took = shared_and_alone(config, tmp_path, 6)
    assert {s: t["shared_training"] for s, t in took.items() if t["shared_training"]} == {
        "finetune": [0], "first_session": [0], "er_aml": [0]}  # ewc, first in order, ran it
    log = tmp_path / "shared" / "cells" / "synth-tiny__er_aml__seed0" / "log.txt"
    assert "experience 0: its training loop loaded, run by a cell that trains that loop " \
        "alike (first_loop_as)" in log.read_text()
    # the file of a loop shared across strategies holds no plugin state: refused as one of
    # ewc's own loops (whose states it would need), trained instead, same numbers
    crossed, own = tmp_path / "crossed", tmp_path / "own"
    alone = run_cell(cells["ewc"], log=lambda m: None, first_loop=crossed,
                     save_first_loop=True)
    own.mkdir()
    (crossed / "exp000.pt").rename(own / "exp000.pt")
    lines: list[str] = []
    got = run_cell(cells["ewc"], log=lines.append, trained=own, save_trained=False)
    assert got["timings"]["shared_training"] == []
    assert any("exp000.pt could not be used" in line and "plugin states are absent" in line
               for line in lines)
    assert json.dumps({k: v for k, v in got.items() if k != "timings"}, sort_keys=True) == \
        json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True)
    # one whose optimizer has other parameter groups is refused before anything loads
    import torch

    state = torch.load(own / "exp000.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    crossed.mkdir(exist_ok=True)
    torch.save({**state, "optimizer": {**state["optimizer"], "param_groups": groups[:1] + [
        {**groups[0], "params": []}]}}, crossed / "exp000.pt")
    lines.clear()
    third = run_cell(cells["ewc"], log=lines.append, first_loop=crossed)
    assert third["timings"]["shared_training"] == []
    assert any("its optimizer is not this cell's" in line for line in lines)
    assert json.dumps({k: v for k, v in third.items() if k != "timings"}, sort_keys=True) == \
        json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True)


def test_loops_loaded_then_trained_give_the_numbers_of_training_alone(tmp_path):
    """A cell may load some experiences' loops and train others itself (its twin is still
    running under --jobs 2, or a file is missing): sdc on fecd then still equals sdc on fecd
    alone, bit for bit, whichever experience it trains itself (fecd's teacher, loaded with
    a loop, must not be rolled back at the next experience it trains)."""
    import shutil

    from benchmarks.run.cell import run_cell

    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="mixed", seeds=[0], strategies={
        "fecd": {}, "sdc-fecd": {"strategy": "sdc", "sdc_on": "fecd"}})
    twin, cell = expand_cells(parse_config(data, "mixed.yaml", overrides=FAST))
    assert twin.training_key == cell.training_key
    written = tmp_path / "written"
    run_cell(twin, log=lambda m: None, trained=written, save_trained=True)
    alone = run_cell(cell, log=lambda m: None)
    for missing in (0, 1, 2):
        folder = tmp_path / f"without-{missing}"
        shutil.copytree(written, folder)
        (folder / f"exp{missing:03d}.pt").unlink()
        got = run_cell(cell, log=lambda m: None, trained=folder, save_trained=False)
        assert got["timings"]["shared_training"] == [e for e in range(3) if e != missing]
        assert got["timings"]["shared_training_s"] > 0
        assert json.dumps({k: v for k, v in got.items() if k != "timings"},
                          sort_keys=True) == \
            json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True), \
            f"trained experience {missing} itself"


def test_an_unusable_shared_training_loop_is_trained_instead(tmp_path):
    """A shared training loop that cannot be read (damaged, a pickle of objects, another
    experience's) only costs time: the cell runs that loop itself, to the numbers of a cell
    that never saw the folder, says so, and never overwrites the file."""
    from benchmarks.run.cell import run_cell

    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="twin", seeds=[0], strategies={"sdc": {}})
    cell = expand_cells(parse_config(data, "twin.yaml", overrides=FAST))[0]
    alone = run_cell(cell, log=lambda m: None)
    folder = tmp_path / "trained"
    folder.mkdir()
    (folder / "exp000.pt").write_bytes(b"not a checkpoint")
    lines: list[str] = []
    got = run_cell(cell, log=lines.append, trained=folder, save_trained=True)
    assert got["timings"]["shared_training"] == []
    assert json.dumps({k: v for k, v in got.items() if k != "timings"}, sort_keys=True) == \
        json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True)
    assert any("exp000.pt could not be used" in line for line in lines)
    assert (folder / "exp000.pt").read_bytes() == b"not a checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["exp000.pt", "exp001.pt", "exp002.pt"]
    # a file of the wrong experience is refused too; the good ones are then loaded
    (folder / "exp000.pt").unlink()
    (folder / "exp001.pt").rename(folder / "exp000.pt")
    lines.clear()
    again = run_cell(cell, log=lines.append, trained=folder, save_trained=False)
    assert again["timings"]["shared_training"] == [2]
    assert any("holds experience 1, not 0" in line for line in lines)
    assert json.dumps({k: v for k, v in again.items() if k != "timings"}, sort_keys=True) == \
        json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True)
    # a well-formed file of another model (other shapes), or lacking a part, is checked
    # before anything is loaded: never half applied, trained instead
    import torch

    state = torch.load(folder / "exp002.pt", weights_only=True)
    name = next(iter(state["model"]))
    other = {**state, "model": {**state["model"], name: torch.zeros(1, 2, 3)}}
    torch.save(other, folder / "exp002.pt")
    torch.save({**{k: v for k, v in state.items() if k != "rng"}, "experience": 0},
               folder / "exp000.pt")
    lines.clear()
    third = run_cell(cell, log=lines.append, trained=folder, save_trained=False)
    assert third["timings"]["shared_training"] == []
    assert any("exp002.pt could not be used" in line and "not this cell's" in line
               for line in lines)
    assert any("exp000.pt could not be used" in line and "it lacks rng" in line
               for line in lines)
    assert json.dumps({k: v for k, v in third.items() if k != "timings"}, sort_keys=True) == \
        json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True)


def test_an_unusable_shared_first_experience_is_trained_instead(tmp_path):
    """A shared first experience that cannot be read (damaged, or written by another
    stream) only costs time: the cell trains that experience itself, to the numbers of a
    cell that never saw the file, and says so in its log."""
    from benchmarks.run.cell import run_cell

    cell = expand_cells(load_config(SMOKE, [*FAST, "seeds=[0]"]))[0]
    alone = run_cell(cell, log=lambda m: None)
    bad = tmp_path / "first.pt"
    bad.write_bytes(b"not a checkpoint")
    lines: list[str] = []
    got = run_cell(cell, log=lines.append, first=bad, save_first=True)
    assert not got["timings"]["shared_first_experience"] and got["timings"]["resumed_after"] == 0
    assert json.dumps({k: v for k, v in got.items() if k != "timings"}, sort_keys=True) == \
        json.dumps({k: v for k, v in alone.items() if k != "timings"}, sort_keys=True)
    assert any("could not be used" in line for line in lines)
    assert bad.read_bytes() == b"not a checkpoint"  # never overwritten while it exists


def test_first_experiences_are_not_shared_with_avalanche_loggers_or_off_cpu(tmp_path):
    """A follower's own Avalanche logs would lack the first experience, and a CUDA
    generator is not in a checkpoint: neither shares."""
    from benchmarks.run.sharing import sharable

    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="logged", seeds=[0], logging={"csv": True}, strategies={
        "l2_kd": {"lam": 1.0}, "l2-strong": {"strategy": "l2_kd", "lam": 5.0}})
    config = parse_config(data, "logged.yaml", overrides=FAST)
    run_matrix(config, tmp_path / "logged", progress=False)
    for result in results(tmp_path / "logged").values():
        assert not result["payload"]["timings"]["shared_first_experience"]
    cell = expand_cells(config)[0]
    assert sharable(cell)
    assert not sharable(cell.model_copy(update={"training": cell.training.model_copy(
        update={"device": "cuda"})}))
