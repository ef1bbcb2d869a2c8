"""Issue #34, "no input loses a result, round two": one test per numbered item of the
issue (1-15) and one for its "refused too late" paragraph.

Each asserts what the user sees (the exit code and, for bad input, exactly one line
``lrbench: error: ...`` naming the problem and the fix, no traceback) and that no finished
``result.json`` written before the command changed (its MD5). Runs are the smoke matrix's
(``configs/smoke.yaml``, 3 iterations: the ``smoke_store`` fixture's cells) or smaller;
nothing depends on timing: a process is waited for by polling what it does, never by a
fixed sleep. Every case is a row of docs/errors.md, "Hostile input".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S
from test_errors import SMOKE as SMOKE_DATA
from test_errors import _alias_bomb, matrix

from benchmarks.cli import main
from benchmarks.config import SEED_MAX, load_config
from benchmarks.errors import LrbenchError

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
SMOKE = REPO / "configs" / "smoke.yaml"
FAST = ["--set", "training.iterations=3"]  # the smoke store's budget: its cells are reused
CELL = "synth-tiny__finetune__seed0"


# -- helpers ------------------------------------------------------------------------------
def finished_md5(store: Path) -> dict[str, str]:
    """MD5 of every finished ``result.json`` of ``store`` (regular files only: a FIFO or a
    link to /dev/zero that a test planted is never opened)."""
    out = {}
    for path in sorted(Path(store).glob("cells/*/result.json")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            finished = json.loads(data).get("status") == "finished"
        except (ValueError, AttributeError):
            continue
        if finished:
            out[path.parent.name] = hashlib.md5(data).hexdigest()  # noqa: S324
    return out


@pytest.fixture
def store(smoke_store, tmp_path) -> Path:
    """A copy of the session's smoke store (4 finished cells) to attack."""
    copy = tmp_path / "store"
    shutil.copytree(smoke_store, copy)
    return copy


def refused(code: int, err: str, fragment: str) -> str:
    """Exit code 2, exactly one line ``lrbench: error: ...`` holding ``fragment``."""
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("lrbench: error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]
    return lines[0]


def lrbench(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def cli(*argv: str, cwd: Path = REPO, path: list[Path] = (), env: dict | None = None,
        timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (``path``: folders put first on its PYTHONPATH)."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(REPO),
                                         *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "benchmarks", *map(str, argv)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def exiter(tmp_path, monkeypatch) -> Path:
    """The test-only ``exiter`` strategy (tests/hostile_plugin.py) as an entry point: the
    folder to put on a subprocess's PYTHONPATH (importing the module registers it: into a
    copy of the registry, so this process's registry stays as it was)."""
    import strategies.registry as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    from hostile_plugin import install_exiter

    return install_exiter(tmp_path / "exiter-site")


def planted_pickle(path: Path, marker: Path) -> Path:
    """A pickle whose loading would create ``marker`` (``os.system``: code execution)."""
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    return path


# -- results lost or reported wrong -------------------------------------------------------
def test_01_plugin_sys_exit_fails_its_cell_and_run_check_tune_exit_non_zero(
        store, tmp_path, exiter):
    """A plugin whose callback calls sys.exit(): with --jobs 2 the cell is recorded as
    failed with one line naming it, the cell finishing beside it is kept, finished cells
    of other strategies stay byte-identical, and run, check and tune exit non-zero."""
    before = finished_md5(store)
    strategies = ("strategies={finetune: {}, finetune-b: {strategy: finetune, training: "
                  "{lr: 0.001}}, exiter: {}}")
    proc = cli("run", SMOKE, "--out", store, "--resume", "--jobs", "2", *FAST,
               "--set", "seeds=[0]", "--set", strategies, path=[exiter])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    named = [line for line in proc.stdout.splitlines() if "synth-tiny__exiter__seed0" in line]
    assert named == ["FAILED synth-tiny__exiter__seed0: SystemExit(0): the cell's code (its "
                     "strategy plugin, or a library it calls) tried to exit the process"]
    assert "1 finished, 1 skipped (already done), 1 failed" in proc.stdout
    after = finished_md5(store)
    assert {k: after[k] for k in before} == before  # other strategies' cells stay
    assert "synth-tiny__finetune-b__seed0" in after  # finished beside it: kept
    failed = json.loads((store / "cells" / "synth-tiny__exiter__seed0" / "result.json")
                        .read_text())
    assert failed["status"] == "failed" and failed["reason"].startswith("SystemExit(0)")

    check = cli("check", "exiter", path=[exiter])
    assert check.returncode == 1, check.stderr
    assert [line for line in check.stdout.splitlines() if "FAIL " in line] == [
        "  FAIL  SystemExit(0): the cell's code (its strategy plugin, or a library it calls) "
        f"tried to exit the process (raised at {exiter / 'lrbench_test_exiter.py'}:34)"]
    ours = [line for line in check.stderr.splitlines() if line.startswith("lrbench:")]
    assert ours == ["lrbench: exiter: a contract-kit cell failed: SystemExit(0): the cell's "
                    "code (its strategy plugin, or a library it calls) tried to exit the "
                    "process"]

    tune = cli("tune", matrix(tmp_path, seeds=[0], strategies={"exiter": {}}), "--trials",
               "1", "--validation", "0.2", "--out", tmp_path / "tune", *FAST, path=[exiter])
    assert tune.returncode == 2 and "Traceback" not in tune.stderr, tune.stderr
    ours = [line for line in tune.stderr.splitlines() if line.startswith("lrbench:")]
    assert len(ours) == 1 and ours[0].startswith("lrbench: error: every trial of 'exiter' "
                                                 "failed"), tune.stderr


def test_01_keyboard_interrupt_in_a_plugin_fails_its_cell_only(store, exiter):
    """A KeyboardInterrupt raised by a plugin (no signal), in the run's own process
    (--jobs 1): its cell fails with one line naming it, the run goes on and exits 1."""
    before = finished_md5(store)
    proc = cli("run", SMOKE, "--out", store, "--resume", *FAST, "--set", "seeds=[0]",
               "--set", "strategies={exiter: {interrupt: true}, finetune: {}}", path=[exiter])
    assert proc.returncode == 1, proc.stderr
    named = [line for line in proc.stdout.splitlines() if "exiter" in line]
    assert named == ["FAILED synth-tiny__exiter__seed0: KeyboardInterrupt raised by the "
                     "cell's code (its strategy plugin, or a library it calls), not by a "
                     "signal"]
    assert "0 finished, 1 skipped (already done), 1 failed" in proc.stdout
    assert finished_md5(store) == before


def test_02_seeds_work_up_to_the_documented_maximum(tmp_path, store, capsys):
    """Every seed the matrix accepts (0..2**32 - 1, docs) runs: the sampler's seed is
    folded into NumPy's range, identical to before wherever that fitted."""
    from strategies.registry import derived_seed

    assert derived_seed(42_948, 100_003, 9) == 42_948 * 100_003 + 9  # stored cells keep
    assert 0 <= derived_seed(SEED_MAX, 100_003, 9) <= SEED_MAX  # their numbers
    code, out, err = lrbench(capsys, "run", SMOKE, "--out", tmp_path / "max", "--set",
                             "training.iterations=1", "--set", f"seeds=[{SEED_MAX}]",
                             "--set", "strategies={finetune: {}}")
    assert code == 0, err
    assert "1 finished, 0 skipped (already done), 0 failed" in out
    before = finished_md5(store)
    code, _, err = lrbench(capsys, "run", SMOKE, "--out", store, *FAST, "--set",
                           f"seeds=[{SEED_MAX + 1}]")
    refused(code, err, f"seeds.0: Input should be less than or equal to {SEED_MAX}")
    assert finished_md5(store) == before


@pytest.mark.parametrize("case", ["strategy-case", "scenario-case", "name-newline"])
def test_03_names_that_collide_by_case_or_end_in_a_newline(case, store, tmp_path, capsys):
    before = finished_md5(store)
    scenario = SMOKE_DATA["scenarios"][0]
    build, fragment = {
        "strategy-case": (lambda: {"strategies": {"finetune": {}, "Finetune": {
            "strategy": "finetune"}}}, "strategy labels 'Finetune', 'finetune' differ only "
            "in letter case"),
        "scenario-case": (lambda: {"scenarios": [scenario, {**scenario, "name":
                                                            "Synth-Tiny"}]},
                          "scenario names 'Synth-Tiny', 'synth-tiny' differ only in letter "
                          "case"),
        "name-newline": (lambda: {"scenarios": [{**scenario, "name": "synth-tiny\n"}]},
                         r"'synth-tiny\n' cannot name a folder"),
    }[case]
    path = matrix(tmp_path, **build())
    refused(*lrbench(capsys, "run", path, "--out", store)[::2], fragment)
    assert finished_md5(store) == before


def _other_numbers(store: Path, tmp: Path) -> Path:
    """A copy of ``store`` whose finetune seed 0 has the same config hash but another R
    matrix (as a store copied from elsewhere may)."""
    other = tmp / "other"
    shutil.copytree(store, other)
    path = other / "cells" / CELL / "result.json"
    result = json.loads(path.read_text())
    result["payload"]["r_matrix"]["recall"]["1"][-1][0] = 0.999
    path.write_text(json.dumps(result))
    return other


def test_04_conflicting_copies_resume_and_force(store, tmp_path, capsys):
    """Two stores holding one cell (one hash) with different numbers: an error naming both
    files, whatever their order. --resume with a changed matrix keeps a copy of each
    finished result it replaces; --resume --force is refused as contradictory."""
    other = _other_numbers(store, tmp_path)
    before, before_other = finished_md5(store), finished_md5(other)
    for stores in ((store, other), (other, store)):
        line = refused(*lrbench(capsys, "report", *stores, "--out", tmp_path / "rep")[::2],
                       f"cell {CELL} has two copies with one config hash but different "
                       "results")
        for s in stores:
            assert str(s / "cells" / CELL / "result.json") in line
    assert not (tmp_path / "rep").exists()
    assert (finished_md5(store), finished_md5(other)) == (before, before_other)

    from reports.load import load_results

    failed = tmp_path / "failed"  # a failed copy gives way to a finished one, either order
    shutil.copytree(store, failed)
    path = failed / "cells" / CELL / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**{k: v for k, v in result.items() if k != "payload"},
                                "status": "failed", "reason": "RuntimeError: boom"}))
    for stores in ((store, failed), (failed, store)):
        merged = load_results(list(stores))
        assert CELL in set(merged.cells.cell) and merged.failed.empty

    refused(*lrbench(capsys, "run", SMOKE, "--out", store, *FAST, "--resume", "--force")[::2],
            "--resume and --force contradict each other")
    assert finished_md5(store) == before

    code, out, err = lrbench(capsys, "run", SMOKE, "--out", store, *FAST, "--resume", "--set",
                             "seeds=[0]", "--set", "strategies.l2_kd.lam=2.0")
    assert code == 0, err
    assert "1 finished, 1 skipped" in out
    cell = store / "cells" / "synth-tiny__l2_kd__seed0"
    done = [line for line in out.splitlines() if line.startswith(f"done   {cell.name}: ")]
    assert len(done) == 1 and done[0].endswith(
        f" (its finished result of another config kept as {cell / 'result.json.replaced'})")
    kept = hashlib.md5((cell / "result.json.replaced").read_bytes()).hexdigest()  # noqa: S324
    assert kept == before[cell.name]  # the replaced result, byte for byte
    after = finished_md5(store)
    assert {k: v for k, v in after.items() if k != cell.name} == \
        {k: v for k, v in before.items() if k != cell.name}


@pytest.mark.parametrize("value", [7.5, -3, float("nan")])
def test_05_values_outside_0_1_are_a_damaged_result(value, store, tmp_path, capsys):
    path = store / "cells" / CELL / "result.json"
    result = json.loads(path.read_text())
    result["payload"]["r_matrix"]["recall"]["1"][1][0] = value
    path.write_text(json.dumps(result))
    before = finished_md5(store)
    line = refused(*lrbench(capsys, "report", store, "--out", tmp_path / "rep")[::2],
                   f"{path}: damaged result (the R matrix of recall@1 holds ")
    assert ("outside [0, 1]" in line) == (value == value)  # NaN: not a finite number
    assert finished_md5(store) == before and not (tmp_path / "rep").exists()


# -- hangs and memory ---------------------------------------------------------------------
def test_06_alias_bombs_are_refused_in_every_yaml_file(store, tmp_path, capsys):
    """The one YAML reader's bounds hold for a claims file, a matrix's ``strategies: *a8``
    and a store's matrix.yaml; the error never prints the expanded input."""
    before = finished_md5(store)
    bomb = _alias_bomb().decode()
    claims = tmp_path / "claims.yaml"
    claims.write_text(bomb + "claims: *a9\n")
    refused(*lrbench(capsys, "report", store, "--claims", claims, "--out",
                     tmp_path / "rep")[::2], "once its aliases are expanded (an alias bomb?)")
    m = tmp_path / "m.yaml"
    m.write_text(bomb + "strategies: *a8\n")
    refused(*lrbench(capsys, "run", m, "--out", store)[::2], "once its aliases are expanded")
    small = tmp_path / "small.yaml"  # under the bound: a validation error, printed short
    small.write_text("x: &x [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9]]\n"
                     "y: &y [*x, *x, *x, *x, *x, *x, *x, *x, *x]\n"
                     "z: &z [*y, *y, *y, *y, *y, *y, *y, *y, *y]\n"
                     "name: small\nseeds: [0]\nscenarios: *z\nstrategies: *z\n")
    line = refused(*lrbench(capsys, "run", small, "--out", store)[::2], "small.yaml: ")
    assert len(line) < 400, line
    (store / "matrix.yaml").write_text(bomb)
    after_plant = finished_md5(store)
    refused(*lrbench(capsys, "report", store, "--out", tmp_path / "rep")[::2],
            f"{store / 'matrix.yaml'}: line 6: holds more than 100,000 values")
    refused(*lrbench(capsys, "run", SMOKE, "--out", store, *FAST)[::2],
            "holds more than 100,000 values once its aliases are expanded")
    assert finished_md5(store) == after_plant == before


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "folder"])
def test_07_result_json_that_is_not_a_file(kind, store, tmp_path):
    """A result.json that is a link to /dev/zero, a FIFO or a folder: report refuses it in
    one line at once; run (holding the lock) sets it aside and recomputes the cell."""
    path = store / "cells" / CELL / "result.json"
    path.unlink()
    {"dev-zero": lambda: path.symlink_to("/dev/zero"), "fifo": lambda: os.mkfifo(path),
     "folder": path.mkdir}[kind]()
    before = finished_md5(store)
    what = {"dev-zero": "a character device", "fifo": "a FIFO (named pipe)",
            "folder": "a folder"}[kind]
    proc = cli("report", store, "--out", tmp_path / "rep")
    refused(proc.returncode, proc.stderr, f"{path}: damaged result (it is {what}, not a "
                                          "regular file); recompute it with 'lrbench run")
    proc = cli("run", SMOKE, "--out", store, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "1 finished, 3 skipped" in proc.stdout
    assert "the damaged file is kept as result.json.damaged" in proc.stderr
    assert os.path.lexists(path.with_name("result.json.damaged"))
    after = finished_md5(store)
    assert {k: after[k] for k in before} == before and CELL in after


def test_08_kill_9_of_a_jobs_2_run_leaves_no_process(store, tmp_path, monkeypatch):
    """kill -9 of ``lrbench run --jobs 2`` while both workers are mid-cell (held at the
    gate): every process it started (the workers, multiprocessing's resource tracker) is
    gone within 10 s (polled), and the store's finished results are untouched."""
    import psutil

    import strategies.registry as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # (importing the
    from gate_plugin import install_gate, wait_for  # module registers gate: in a copy)

    folder = tmp_path / "gate"
    folder.mkdir()
    site = install_gate(tmp_path / "gate-site")
    before = finished_md5(store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "run", str(SMOKE), "--out", str(store),
             "--resume", "--jobs", "2", *FAST, "--set",
             f"strategies={{gate: {{dir: {str(folder)!r}}}}}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(folder / "started-seed0", proc, log)
            wait_for(folder / "started-seed1", proc, log)
            started = psutil.Process(proc.pid).children(recursive=True)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert len(started) >= 2, started  # two workers (and the resource tracker)

    def alive(p: psutil.Process) -> bool:  # a zombie has ended (whoever reaps it)
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 10
    while any(map(alive, started)) and time.monotonic() < deadline:
        time.sleep(0.05)  # polled: done as soon as they are gone
    left = [p for p in started if alive(p)]
    for p in left:  # (not to leave them behind if the test fails)
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    assert not left, [p.pid for p in left]
    assert finished_md5(store) == before


@pytest.mark.parametrize("record", ["pid-reused", "pid-1", "pid-0", "garbage"])
def test_09_a_stale_lock_owner_record_of_this_host_does_not_block(record, store, capsys):
    """The OS lock is free, the owner record names this host: a killed run's record whose
    pid another process has now (this test's parent), ``1 HOST``, ``0 HOST``, or garbage.
    The OS lock decides: the run goes ahead (and a record of another host still keeps
    it out, tested in test_hardening)."""
    from benchmarks.run.store import hostname, lock_free

    before = finished_md5(store)
    text = {"pid-reused": f"{os.getppid()} {hostname()}", "pid-1": f"1 {hostname()}",
            "pid-0": f"0 {hostname()}", "garbage": "vm"}[record]
    (store / ".lock.owner").write_text(text + "\n")
    assert lock_free(store)
    code, out, err = lrbench(capsys, "run", SMOKE, "--out", store, *FAST)
    assert code == 0, err
    assert "0 finished, 4 skipped" in out
    assert not (store / ".lock.owner").exists()  # the run's own record, removed at its end
    assert finished_md5(store) == before


# -- tracebacks instead of one line -------------------------------------------------------
def _damage_layout(store: Path, what: str) -> tuple[list[str], str]:
    """Damage ``store`` as ``what`` says; the extra argv and the message fragment."""
    if what == "results-csv-folder":
        (store / "results.csv").unlink()
        (store / "results.csv").mkdir()
        return [], f"'{store / 'results.csv'}': this store's results.csv is a folder"
    if what == "cells-a-file":
        shutil.rmtree(store / "cells")
        (store / "cells").write_text("")
        return [], f"'{store / 'cells'}' is a file, where the store keeps a folder"
    if what == "matrix-folder":
        (store / "matrix.yaml").unlink()
        (store / "matrix.yaml").mkdir()
        return [], f"'{store / 'matrix.yaml'}': this store's matrix.yaml is a folder"
    if what == "owner-folder":
        (store / ".lock.owner").mkdir()
        return [], f"'{store / '.lock.owner'}' is a folder, not lrbench's lock owner record"
    if what == "lock-loop":
        (store / ".lock").unlink(missing_ok=True)
        (store / ".lock").symlink_to(".lock")
        return [], "Too many levels of symbolic links"
    if what == "log-folder":
        (store / "cells" / CELL / "log.txt").unlink()
        (store / "cells" / CELL / "log.txt").mkdir()
        return [], "this cell's log.txt is a folder"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["results-csv-folder", "cells-a-file", "matrix-folder",
                                  "owner-folder", "lock-loop", "log-folder"])
def test_10_a_damaged_store_layout_is_one_line_before_training(what, store, capsys):
    extra, fragment = _damage_layout(store, what)
    before = finished_md5(store)
    refused(*lrbench(capsys, "run", SMOKE, "--out", store, *FAST, *extra)[::2], fragment)
    assert finished_md5(store) == before


def test_10_an_unreadable_checkpoint_names_the_file_and_the_advice_works(store, capsys):
    """A checkpoint.pt that does not unpickle: --checkpoints refuses the run in one line
    naming it (not a cell that fails on every rerun); deleting it, as the message says,
    lets the cell train from its start."""
    cell = store / "cells" / "synth-tiny__l2_kd__seed1"
    (cell / "result.json").unlink()
    (cell / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    before = finished_md5(store)
    line = refused(*lrbench(capsys, "run", SMOKE, "--out", store, *FAST,
                            "--checkpoints")[::2],
                   f"{cell / 'checkpoint.pt'}: not a checkpoint lrbench loads")
    assert "delete it (or move it aside) and its cell trains from the start" in line
    assert finished_md5(store) == before
    (cell / "checkpoint.pt").unlink()
    code, out, err = lrbench(capsys, "run", SMOKE, "--out", store, *FAST, "--checkpoints")
    assert code == 0, err
    assert "1 finished, 3 skipped" in out
    assert {k: v for k, v in finished_md5(store).items() if k in before} == before


def _cub_broken(tmp: Path) -> tuple[Path, str]:
    """A CUB tree (6 images per class) with one listed image missing and one a symbolic
    link loop; a matrix reading it."""
    from test_datasets import make_cub

    cub = make_cub(tmp, per_class=6)
    (cub / "images" / "003.Bird_3" / "Bird_3_0000.jpg").unlink()
    loop = cub / "images" / "007.Bird_7" / "Bird_7_0000.jpg"
    loop.unlink()
    loop.symlink_to(loop.name)
    return cub, matrix(tmp, data_root=str(cub), seeds=[0], strategies={"finetune": {}},
                       scenarios=[{"name": "cub-tiny", "dataset": "cub200", "schedule": "3",
                                   "image_size": 32}],
                       **{"training.p": 2, "training.k": 2, "training.iterations": 1})


def test_11_a_missing_or_looping_image_is_a_broken_file(store, tmp_path, capsys):
    cub, path = _cub_broken(tmp_path)
    before = finished_md5(store)
    refused(*lrbench(capsys, "run", path, "--out", store)[::2],
            "images that cannot be decoded: 2 in cub200 (images/003.Bird_3/Bird_3_0000.jpg, "
            "images/007.Bird_7/Bird_7_0000.jpg)")
    refused(*lrbench(capsys, "data", "check", "cub200", "--root", cub)[::2],
            "2 of 18 images of cub200 cannot be decoded")
    assert finished_md5(store) == before
    code, out, err = lrbench(capsys, "run", path, "--out", tmp_path / "skipping",
                             "--skip-corrupt")
    assert code == 0, err
    assert "--skip-corrupt: leaving out 2 image(s)" in err


def test_12_a_broken_strategy_file_is_a_one_line_warning(store, tmp_path):
    """A syntax error in a file under strategies/: every command still works, with one
    warning line naming the file; only its own name is refused, in one line."""
    copy = tmp_path / "site"
    shutil.copytree(REPO / "strategies", copy / "strategies",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "strategies" / "broken.py").write_text("def broken(:\n")
    warning = (f"lrbench: warning: strategy module {copy / 'strategies'}/broken.py failed to "
               "import (line 1): SyntaxError: invalid syntax; fix or remove that file "
               "(strategy 'broken' is unavailable)")
    proc = cli("list", "strategies", path=[copy], cwd=tmp_path)  # (not REPO: first on
    # sys.path, it would give its own strategies/)
    assert proc.returncode == 0 and proc.stderr.strip().splitlines() == [warning], proc.stderr
    assert "finetune" in proc.stdout
    before = finished_md5(store)
    proc = cli("run", SMOKE, "--out", store, *FAST, "--dry-run", path=[copy], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr.strip().splitlines() == [warning], proc.stderr
    assert "4 cells: 4 done" in proc.stdout
    proc = cli("check", "broken", path=[copy], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"lrbench: error: strategy module {copy / 'strategies'}/broken.py failed to import")
    assert finished_md5(store) == before


@pytest.mark.parametrize("case", ["not-utf8", "duplicate-key", "same-name", "margin-inf",
                                  "nul-byte"])
def test_13_claims_files(case, store, tmp_path, capsys):
    claim = ("  - name: kd forgets less\n    strategies: [l2_kd]\n    versus: finetune\n"
             "    column: forgetting\n    direction: lower\n")
    text, fragment = {
        "not-utf8": (("claims:\n" + claim).encode().replace(b"less", b"l\xe9ss"),
                     "line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
        "duplicate-key": (("claims:\n" + claim + "    direction: higher\n").encode(),
                          "the key 'direction' is given twice in one mapping"),
        "same-name": (("claims:\n" + claim + claim.replace("lower", "higher")).encode(),
                      "the claim name 'kd forgets less' is given 2 times; give each claim "
                      "its own name"),
        "margin-inf": (("claims:\n" + claim + "    margin: .inf\n").encode(),
                       "claims.0.margin: Input should be a finite number"),
        "nul-byte": (("claims:\n" + claim).encode().replace(b"less", b"le\x00ss"),
                     "line 2: character U+0000 is not allowed in YAML"),
    }[case]
    path = tmp_path / "claims.yaml"
    path.write_bytes(text)
    before = finished_md5(store)
    refused(*lrbench(capsys, "report", store, "--claims", path, "--out",
                     tmp_path / "rep")[::2], fragment)
    assert finished_md5(store) == before and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("case", ["seed-negative", "seed-huge", "long-name"])
def test_14_tune_inputs(case, store, tmp_path, capsys):
    argv, fragment = {
        "seed-negative": (["--seed", "-1"], "argument --seed: give a seed in 0..4294967295"),
        "seed-huge": (["--seed", str(2**40)], "argument --seed: give a seed in 0..4294967295"),
        "long-name": (["--set", f"name={'a' * 62}"],
                      f"--set 'name={'a' * 62}': name: '{'a' * 62}' is too long to name its "
                      "tuning store"),
    }[case]
    before = finished_md5(store)
    code, err = None, ""
    try:
        code, _, err = lrbench(capsys, "tune", matrix(tmp_path), "--trials", "1",
                               "--validation", "0.2", "--out", store, *argv)
    except SystemExit as exc:  # argparse's own one-line usage error
        code, err = exc.code, capsys.readouterr().err
        assert err.startswith("lrbench tune: error: "), err
        err = err.replace("lrbench tune: error: ", "lrbench: error: ")
    refused(code, err, fragment)
    assert finished_md5(store) == before


def test_14_tune_metric_is_read_as_its_k():
    """--metric recall@01 is recall@1 (its K is stored as "1"), not a metric no trial has."""
    from benchmarks.tune import _metric_parts

    config = load_config(SMOKE, registries=False)
    assert _metric_parts("recall@01", config) == ("recall", "1")
    with pytest.raises(LrbenchError, match="'recall@16' is not evaluated by this matrix"):
        _metric_parts("recall@16", config)


# -- code execution from a store ----------------------------------------------------------
def test_15_a_planted_pickle_never_runs(store, tmp_path, capsys):
    """A pickle whose loading would create a marker file, planted as a cell's checkpoint
    (run --checkpoints, and --resume with a changed matrix) and as a shared first
    experience (a run keeping them, as tune does, and a cell resuming from one): refused
    in one line naming it, or left unused with a note; the marker never appears."""
    from benchmarks.config import expand_cells
    from benchmarks.run.cell import run_cell
    from benchmarks.run.store import first_experience_path
    from benchmarks.runner import run_matrix

    marker = tmp_path / "marker"
    cell = store / "cells" / "synth-tiny__l2_kd__seed0"
    (cell / "result.json").unlink()
    planted = planted_pickle(cell / "checkpoint.pt", marker)
    before = finished_md5(store)
    for extra in ([], ["--resume", "--set", "strategies.l2_kd.lam=2.0"]):
        line = refused(*lrbench(capsys, "run", SMOKE, "--out", store, *FAST, "--checkpoints",
                                *extra)[::2], f"{planted}: not a checkpoint lrbench loads")
        assert "Trying to load unsupported GLOBAL posix.system" in line
    assert not marker.exists()
    assert finished_md5(store) == before
    planted.unlink()

    config = load_config(SMOKE, ["training.iterations=3", "seeds=[0]"])
    cells = expand_cells(config)
    first = planted_pickle(first_experience_path(store, cells[1].first_experience_key),
                           marker)
    with pytest.raises(LrbenchError, match=re.escape(f"{first}: not a checkpoint lrbench "
                                                     "loads")):
        run_matrix(config, store, progress=False, resume=True, keep_first=True)
    assert not marker.exists()
    notes: list[str] = []
    payload = run_cell(cells[1], log=notes.append, first=first)
    assert payload["num_experiences"] == 3  # trained it itself
    assert any(f"the shared first experience {first.name} could not be used "
               "(CheckpointError" in n for n in notes), notes
    assert not marker.exists()
    # and as a shared training loop (<store>/trained/<key>/): left unused with a note
    from benchmarks.run.store import shared_training_dir

    loops = shared_training_dir(store, cells[1].training_key)
    loop = planted_pickle(loops / "exp001.pt", marker)
    notes.clear()
    payload = run_cell(cells[1], log=notes.append, trained=loops, save_trained=False)
    assert payload["timings"]["shared_training"] == []
    assert any(f"the shared training {loop.name} could not be used (CheckpointError" in n
               for n in notes), notes
    assert not marker.exists()
    assert finished_md5(store) == before


# -- refused too late, or not at all ------------------------------------------------------
def _cub_label_999(tmp: Path) -> Path:
    from test_datasets import make_cub

    cub = make_cub(tmp)
    labels = cub / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("1 3\n", "1 999\n", 1))
    return cub


LATE = {
    # case: (argv after "run" builder (tmp, store) or a full argv, fragment); "run" cases
    # go to the store's copy
    "lam-inf": (lambda t, s: ["run", matrix(t, **{"strategies.l2_kd.lam": float("inf")}),
                              "--out", s], "hyperparameter 'lam': Input should be a finite "
                                           "number (got inf)"),
    "lam-1e400": (lambda t, s: ["run", SMOKE, "--out", s, *FAST, "--set",
                                "strategies.l2_kd.lam=1e400"],
                  "hyperparameter 'lam': Input should be a finite number (got '1e400')"),
    "lr-inf": (lambda t, s: ["run", SMOKE, "--out", s, *FAST, "--set", "training.lr=.inf"],
               "training.lr: Input should be a finite number"),
    "frozen-stages": (lambda t, s: ["run", matrix(t, **{"model.frozen_stages": 1000}),
                                    "--out", s],
                      "model.frozen_stages: 1000 is not below the 4 stages of trunk "
                      "'small_cnn'"),
    "eval-mb-size": (lambda t, s: ["run", matrix(t, **{"training.eval_mb_size": 10**20}),
                                   "--out", s],
                     "training.eval_mb_size: Input should be less than or equal to 100000"),
    "pretrained-small-cnn": (lambda t, s: ["run", matrix(t, **{"model.pretrained": True}),
                                           "--out", s],
                             "the small_cnn trunk has no pretrained weights"),
    "pretrained-path-small-cnn": (lambda t, s: ["run", matrix(t, **{
        "model.pretrained": "/weights.pth"}), "--out", s],
        "the small_cnn trunk has no pretrained weights"),
    "cells-json-empty": (lambda t, s: ["report", _write(s / "cells.json", b"{}").parent,
                                       "--out", t / "rep"],
                         "cells.json': damaged (an empty mapping"),
    "cub-label-999": (lambda t, s: ["data", "info", "cub200", "--root", _cub_label_999(t)],
                      "image_class_labels.txt gives the class id '999' for image id 1; class "
                      "ids are positive integers (1..200)"),
    "set-no-key": (lambda t, s: ["run", SMOKE, "--out", s, "--set", "=5"],
                   "--set '=5': give the key before '='"),
    "data-root-a-file": (lambda t, s: ["data", "info", "cub200", "--root", "/etc/passwd"],
                         "dataset root '/etc/passwd' is not a folder"),
    "nul-byte": (lambda t, s: ["run", _write(t / "m.yaml", b"name: x\nseeds: [0]\x00\n"),
                               "--out", s], "m.yaml: line 2: character U+0000 is not allowed "
                                            "in YAML"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(LATE))
def test_refused_too_late(case, store, tmp_path, capsys):
    build, fragment = LATE[case]
    before = finished_md5(store)
    refused(*lrbench(capsys, *build(tmp_path, store))[::2], fragment)
    assert finished_md5(store) == before
    assert not (tmp_path / "rep").exists()


def test_yaml_merge_keys_are_read(tmp_path):
    """``<<:`` (YAML's merge key, which yaml.safe_load reads) merges, inline or through an
    alias, and a key the mapping gives again overrides the merged one, as in YAML; a key
    given twice in one mapping is still refused."""
    path = tmp_path / "m.yaml"
    path.write_text(SMOKE.read_text().replace(
        "training: {p: 4, k: 3, iterations: 5,",
        "training: {<<: {p: 4, k: 3, iterations: 5}, iterations: 3,").replace(
        "  l2_kd: {lam: 1.0}", "  l2_kd: &kd {lam: 1.0}\n  l2_kd-b: {<<: *kd, strategy: "
        "l2_kd, lam: 3.0}"))
    config = load_config(path)
    assert (config.training.p, config.training.k, config.training.iterations) == (4, 3, 3)
    assert config.strategies["l2_kd-b"] == {"strategy": "l2_kd", "lam": 3.0}
    path.write_text(path.read_text().replace("{lam: 1.0}", "{lam: 1.0, lam: 2.0}"))
    with pytest.raises(LrbenchError, match="the key 'lam' is given twice in one mapping"):
        load_config(path)


#: docs/errors.md, "Hostile input": each row's id -> the test of this file that checks it
DOCUMENTED = {
    "hostile-plugin-exit": "test_01_plugin_sys_exit_fails_its_cell_and_run_check_tune_exit_"
                           "non_zero",
    "hostile-plugin-interrupt": "test_01_keyboard_interrupt_in_a_plugin_fails_its_cell_only",
    "hostile-seed-max": "test_02_seeds_work_up_to_the_documented_maximum",
    "hostile-name-case": "test_03_names_that_collide_by_case_or_end_in_a_newline",
    "hostile-name-newline": "test_03_names_that_collide_by_case_or_end_in_a_newline",
    "hostile-merge-conflict": "test_04_conflicting_copies_resume_and_force",
    "hostile-resume-force": "test_04_conflicting_copies_resume_and_force",
    "hostile-resume-replaces": "test_04_conflicting_copies_resume_and_force",
    "hostile-value-range": "test_05_values_outside_0_1_are_a_damaged_result",
    "hostile-alias-bomb-anywhere": "test_06_alias_bombs_are_refused_in_every_yaml_file",
    "hostile-result-not-a-file": "test_07_result_json_that_is_not_a_file",
    "hostile-kill-jobs": "test_08_kill_9_of_a_jobs_2_run_leaves_no_process",
    "hostile-stale-owner": "test_09_a_stale_lock_owner_record_of_this_host_does_not_block",
    "hostile-store-layout": "test_10_a_damaged_store_layout_is_one_line_before_training",
    "hostile-checkpoint-unreadable": "test_10_an_unreadable_checkpoint_names_the_file_and_the_"
                                     "advice_works",
    "hostile-image-missing": "test_11_a_missing_or_looping_image_is_a_broken_file",
    "hostile-strategy-syntax": "test_12_a_broken_strategy_file_is_a_one_line_warning",
    "hostile-claims-not-utf8": "test_13_claims_files",
    "hostile-claims-duplicate-key": "test_13_claims_files",
    "hostile-claims-same-name": "test_13_claims_files",
    "hostile-claims-margin-inf": "test_13_claims_files",
    "hostile-tune-seed": "test_14_tune_inputs",
    "hostile-tune-name": "test_14_tune_inputs",
    "hostile-tune-metric": "test_14_tune_metric_is_read_as_its_k",
    "hostile-pickle": "test_15_a_planted_pickle_never_runs",
    "late-merge-key": "test_yaml_merge_keys_are_read",
    **{f"late-{case}": "test_refused_too_late" for case in LATE},
}


def test_every_hostile_case_is_documented():
    """docs/errors.md, "Hostile input": one row per case, each checked by a test here."""
    text = DOC.read_text()
    assert "\n## Hostile input" in text
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", text.split("\n## Hostile input", 1)[1],
                      flags=re.M)
    assert sorted(rows) == sorted(DOCUMENTED)
    assert all(callable(globals().get(test)) for test in DOCUMENTED.values())
    tested = {name for name in globals() if name.startswith("test_")}
    assert tested - set(DOCUMENTED.values()) == {"test_every_hostile_case_is_documented"}
