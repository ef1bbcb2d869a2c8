"""Shared fixtures: where the real data is (skip when absent) and tiny image files."""

from __future__ import annotations

import os
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
    counts = run_matrix(load_config(REPO / "configs" / "smoke.yaml",
                                    ["training.iterations=3"]), store, progress=False)
    assert counts["finished"] == 4 and counts["failed"] == 0
    return store
