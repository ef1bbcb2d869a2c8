"""Many runs of the real ``lrbench`` command line, each in a process of its own, without
each paying for importing torch, torchvision, Avalanche, pandas, SciPy and matplotlib
(about 2 of the 2.5-7 s every bad-input case took, some 60 cases).

:func:`run_cli_many` starts one server process (this file run as a script) that imports
those third-party libraries and nothing of lrbench, then forks one child per run: the child
changes to the run's folder and environment, sends its stdout and stderr to files and calls
``benchmarks.cli.run()`` with the run's arguments, as ``python -m benchmarks ARGS`` would
(lrbench's own modules are imported fresh in every child). The server has one thread, so
forking it is safe. A run whose environment must differ before those libraries are imported
(a package made to fail to import, ``TORCH_HOME``, ...) does not belong here: use
``subprocess.run([sys.executable, "-m", "benchmarks", ...])``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

#: the libraries the server imports once (each only when installed)
PRELOAD = ("torch", "torchvision", "avalanche.training", "pandas", "scipy.stats",
           "matplotlib", "PIL.Image", "yaml", "pydantic")
#: lrbench's own packages: never imported by the server, so every child imports them anew
OWN = ("benchmarks", "strategies", "reports", "metrics")


def run_cli_many(jobs: list[dict], workers: int = 3,
                 timeout: float = 1800) -> list[subprocess.CompletedProcess]:
    """Run each job (``argv``: the arguments after ``lrbench``, ``cwd``, ``env``: the whole
    environment) as the command line would, ``workers`` at a time; their exit codes and
    output in job order, as ``subprocess.run(..., capture_output=True, text=True)`` gives."""
    if not jobs:
        return []
    proc = subprocess.run([sys.executable, __file__, str(workers)],
                          input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the CLI fork server failed ({proc.returncode}): {proc.stderr}")
    done = json.loads(proc.stdout)
    return [subprocess.CompletedProcess(["lrbench", *job["argv"]], d["returncode"],
                                        d["stdout"], d["stderr"])
            for job, d in zip(jobs, done, strict=True)]


def _child(job: dict, out: Path, err: Path) -> None:
    """In the forked child: become ``python -m benchmarks ARGS`` in the job's folder and
    environment, and never return."""
    code = 1
    try:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
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


def _serve(workers: int) -> None:
    """The server: preload, then fork the jobs read from stdin, ``workers`` at a time, and
    print their results as JSON."""
    import importlib
    import tempfile

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    own = sorted(m for m in sys.modules if m.split(".")[0] in OWN)
    assert not own, f"the server imported lrbench's own modules: {own}"
    jobs = json.loads(sys.stdin.read())
    tmp = Path(tempfile.mkdtemp(prefix="lrbench-forks-"))
    files = [(tmp / f"{i}.out", tmp / f"{i}.err") for i in range(len(jobs))]
    codes: dict[int, int] = {}
    running: dict[int, int] = {}  # pid -> job
    pending = list(range(len(jobs)))
    sys.stdout.flush()
    sys.stderr.flush()
    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(jobs[i], *files[i])
            running[pid] = i
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    results = [{"returncode": codes[i], "stdout": out.read_text(errors="replace"),
                "stderr": err.read_text(errors="replace")}
               for i, (out, err) in enumerate(files)]
    for out, err in files:
        out.unlink()
        err.unlink()
    tmp.rmdir()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
