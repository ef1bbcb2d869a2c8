"""Shared fixtures: where the real data is (skip when absent) and tiny image files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests compute with one intra-op thread, as every cell does (training.threads). On a busy
# machine a parallel region waits for every thread it spans, and a thread the scheduler has
# parked turns milliseconds into seconds: measured under a CPU hog, a 21 s test took 600 s
# with torch's default of one thread per core. Subprocesses inherit the setting.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

warnings.filterwarnings("ignore", message=".*QP solver.*")

REPO = Path(__file__).resolve().parents[1]
#: a subprocess still running after this long has hung: the limit guards against a hang
#: stopping CI, and no test relies on anything finishing faster (the machine may be loaded)
HANG_S = 1800

SHARED_DATA = Path(os.environ.get("LRBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_reaches_python():
    """The tests that press Ctrl-C (``signal.raise_signal(SIGINT)``) need Python's own
    handler. A test run started as an asynchronous job of a non-interactive shell (``cmd &``
    in a script: POSIX starts it with SIGINT ignored, and Python then keeps it ignored)
    would pass those presses by and fail them; give such a run the handler an interactive
    one has."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        yield
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is not there (users' machines)."""
    if not (SHARED_DATA / "CUB_200_2011" / "images.txt").is_file():
        pytest.skip("real data not available (../shared/data is absent)")
    return SHARED_DATA


def write_image(path: Path, seed: int = 0, size: int = 12, mode: str = "RGB") -> Path:
    """A small deterministic image file (format from the suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    arr = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze() if channels == 1 else arr, mode=mode).save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its bytes (a truncated download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory) -> Path:
    """configs/smoke.yaml run once (3 iterations per experience): 4 finished cells."""
    from benchmarks.config import load_config
    from benchmarks.runner import run_matrix

    store = tmp_path_factory.mktemp("stores") / "smoke"
    counts = run_matrix(load_config(REPO / "configs" / "smoke.yaml", SMOKE_FAST), store,
                        progress=False)
    assert counts["finished"] == 4 and counts["failed"] == 0
    return store


#: a quick budget for the smoke matrix, as every run of it in the tests uses
SMOKE_FAST = ["training.iterations=3"]


def tracked(uri: Path, experiment: str) -> list[str]:
    """``--set`` overrides logging a run to MLflow at ``uri`` (none without MLflow)."""
    if importlib.util.find_spec("mlflow") is None:
        return []
    return ["tracking.mlflow=true", f"tracking.uri={uri}", f"tracking.experiment={experiment}"]


def _run_folder(tmp_path_factory) -> Path:
    """A temporary folder of this test run shared by its pytest-xdist workers (each worker
    has its own below it), or this process's own without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` done once per test run, whichever worker asks first, the others
    waiting for it and reading the result: a session fixture is otherwise built by every
    worker that uses it (two local Ray clusters when test_runner.py and test_tracking.py
    are on two workers). One lock for every such build, so two never run at once (they
    also log to one MLflow store)."""
    from filelock import FileLock

    base = _run_folder(tmp_path_factory) / "built-once"
    base.mkdir(exist_ok=True)
    folder, done = base / name, base / f"{name}.done"
    with FileLock(str(base / "lock")):
        if not done.is_file():
            if folder.exists():  # what a build that failed left
                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def mlruns(tmp_path_factory) -> Path:
    """The MLflow tracking folder of the session's tracked smoke runs (one per test run:
    the stores logged to it are built once, :func:`built_once`)."""
    return _run_folder(tmp_path_factory) / "mlflow" / "mlruns"


@pytest.fixture(scope="session")
def jobs2_store(tmp_path_factory, mlruns) -> Path:
    """configs/smoke.yaml run once with ``--jobs 2`` (two cells at once, each in its own
    worker), logged to MLflow (experiment ``smoke-jobs2`` in :func:`mlruns`) when MLflow is
    installed: the same 4 cells as :func:`smoke_store`."""
    from benchmarks.config import load_config
    from benchmarks.runner import run_matrix

    def build(store: Path) -> None:
        config = load_config(REPO / "configs" / "smoke.yaml",
                             [*SMOKE_FAST, *tracked(mlruns, "smoke-jobs2")])
        counts = run_matrix(config, store, jobs=2, progress=False)
        assert counts["finished"] == 4 and counts["failed"] == 0

    return built_once(tmp_path_factory, "jobs2", build)


@pytest.fixture(scope="session")
def ray_store(tmp_path_factory, mlruns) -> Path:
    """configs/smoke.yaml run once on a local Ray cluster (one task per cell), logged to
    MLflow (experiment ``smoke-ray``) when MLflow is installed; skipped without Ray."""
    ray = pytest.importorskip("ray")
    from benchmarks.config import load_config
    from benchmarks.runner import run_matrix

    def build(store: Path) -> None:
        config = load_config(REPO / "configs" / "smoke.yaml",
                             [*SMOKE_FAST, *tracked(mlruns, "smoke-ray")])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            counts = run_matrix(config, store, executor="ray", progress=False)
        finally:
            ray.shutdown()
        assert counts["finished"] == 4 and counts["failed"] == 0

    return built_once(tmp_path_factory, "ray", build)
