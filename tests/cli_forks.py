"""Many runs of the real ``lrbench`` command line, each in a process of its own, without
each paying for importing torch, torchvision, Avalanche, SciPy and matplotlib
(about 2 of the 2.5-7 s most of the 80-odd bad-input cases took).

:func:`run_cli_many` starts one server process (this file run as a script) that imports
those third-party libraries and nothing of lrbench, then forks one child per run: the child
changes to the run's folder and environment, sends its stdout and stderr to files and calls
``benchmarks.cli.run()`` with the run's arguments, as ``python -m benchmarks ARGS`` would
(lrbench's own modules are imported fresh in every child). The server has one thread, so
forking it is safe. A run whose environment must differ before those libraries are imported
(a package made to fail to import, ``TORCH_HOME``, ...) does not belong here: use
``subprocess.run([sys.executable, "-m", "benchmarks", ...])``.

The server applies the warning filters the command line applies before importing them
(``benchmarks.commands.common.quiet_third_party``) and fails the whole batch if importing
them still printed anything, so nothing a real run would show is hidden. Each child has
its own deadline (killed and reported with exit code -9 past it); a child ends with
``os._exit``, so no atexit handler of the server runs in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

#: the libraries the server imports once (each only when installed)
#: (not pandas: it imports pyarrow, which starts a thread, and a forked child would hold
#: a copy of that pool without its thread; each child imports pandas itself)
PRELOAD = ("torch", "torchvision", "avalanche.training", "scipy.stats", "matplotlib",
           "PIL.Image", "yaml", "pydantic")
#: lrbench's own packages: never imported by the server, so every child imports them anew
OWN = ("benchmarks", "strategies", "reports", "metrics")


def run_cli_many(jobs: list[dict], workers: int = 3,
                 timeout: float = 1800) -> list[subprocess.CompletedProcess]:
    """Run each job (``argv``: the arguments after ``lrbench``, ``cwd``, ``env``: the whole
    environment) as the command line would, ``workers`` at a time, each given ``timeout``
    seconds; their exit codes and output in job order, as ``subprocess.run(...,
    capture_output=True, text=True)`` gives."""
    import signal
    import tempfile

    if not jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="lrbench-forks-") as tmp:
        out = Path(tmp) / "results.json"
        server = subprocess.Popen([sys.executable, __file__, str(workers), str(timeout),
                                   str(out), tmp], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        try:
            _, err = server.communicate(json.dumps(jobs), timeout=timeout * len(jobs) + 600)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the server and every child it forked
            server.communicate()
            raise
        if server.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the CLI fork server failed ({server.returncode}): {err}")
        done = json.loads(out.read_text())
    return [subprocess.CompletedProcess(["lrbench", *job["argv"]], d["returncode"],
                                        d["stdout"], d["stderr"])
            for job, d in zip(jobs, done, strict=True)]


def _child(job: dict, out: Path, err: Path) -> None:
    """In the forked child: become ``python -m benchmarks ARGS`` in the job's folder and
    environment, and never return."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        sys.stdin = open(os.devnull)  # noqa: SIM115 (the child ends with os._exit)
        sys.argv = ["lrbench", *job["argv"]]
        sys.path[0] = job["cwd"]  # what `python -m` puts first
        from benchmarks.cli import run

        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 (reported as the interpreter would, exit 1)
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _preload() -> str:
    """Import :data:`PRELOAD` with the command line's warning filters; what they printed."""
    import importlib
    import tempfile
    import warnings

    # as benchmarks.commands.common.quiet_third_party, which main() runs before them
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(capture.fileno(), fd)
        try:
            for name in PRELOAD:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
        capture.seek(0)
        return capture.read().decode(errors="replace")


def _serve(workers: int, timeout: float, results: Path, tmp: Path) -> None:
    """The server: preload, then fork the jobs read from stdin, ``workers`` at a time, each
    killed past ``timeout`` seconds, and write their results to ``results`` as JSON."""
    import signal
    import time

    printed = _preload()
    if printed.strip():
        raise SystemExit(f"importing {', '.join(PRELOAD)} printed (a real run would show "
                         f"it):\n{printed}")
    own = sorted(m for m in sys.modules if m.split(".")[0] in OWN)
    if own:
        raise SystemExit(f"the server imported lrbench's own modules: {own}")
    if Path("/proc/self/task").is_dir() and len(os.listdir("/proc/self/task")) != 1:
        raise SystemExit("the server runs more than one thread: forking it is not safe")
    jobs = json.loads(sys.stdin.read())
    files = [(tmp / f"{i}.out", tmp / f"{i}.err") for i in range(len(jobs))]
    for pair in files:  # before any fork: a child that fails early still has both
        for path in pair:
            path.touch()
    codes: dict[int, int] = {}
    running: dict[int, tuple[int, float]] = {}  # pid -> (job, deadline)
    pending = list(range(len(jobs)))
    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(jobs[i], *files[i])
            running[pid] = (i, time.monotonic() + timeout)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            codes[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
            continue
        now = time.monotonic()
        for late, (i, deadline) in list(running.items()):
            if now > deadline:  # hung: killed, and said so in its stderr
                os.kill(late, signal.SIGKILL)
                os.waitpid(late, 0)
                del running[late]
                codes[i] = -signal.SIGKILL
                with open(files[i][1], "a") as err:
                    err.write(f"\n[cli_forks: killed after {timeout:.0f} s]\n")
        time.sleep(0.05)
    results.write_text(json.dumps([
        {"returncode": codes[i], "stdout": out.read_text(errors="replace"),
         "stderr": err.read_text(errors="replace")} for i, (out, err) in enumerate(files)]))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
