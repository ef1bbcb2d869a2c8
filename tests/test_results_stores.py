"""docs/results/stores.sh keeps the real-data stores in git (their small files only), so a
report can be regenerated, and a run cut off resumed, on a machine that ran nothing; and
the committed stores are whole stores whose cells say what cells.json says."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, SMOKE_FAST

from benchmarks.config import expand_cells, load_config
from benchmarks.run.store import cell_dir, finished, read_result
from reports.load import load_results, summaries

SCRIPT = REPO / "docs" / "results" / "stores.sh"
COMMITTED = REPO / "docs" / "results" / "stores"


def stores_sh(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The script run from a copy of it in ``root`` (a stand-in for the repository)."""
    return subprocess.run(["bash", str(root / "docs" / "results" / "stores.sh"), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture()
def root(tmp_path, smoke_store) -> Path:
    """A repository stand-in: the script, and results/smoke holding the smoke store plus
    what must not be kept (a checkpoint beside a result, a shared first experience)."""
    (tmp_path / "docs" / "results").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "docs" / "results" / "stores.sh")
    store = tmp_path / "results" / "smoke"
    shutil.copytree(smoke_store, store)
    next(store.glob("cells/*")).joinpath("model.pt").write_bytes(b"weights")
    (store / "first").mkdir()
    (store / "first" / "exp0.pt").write_bytes(b"weights")
    return tmp_path


def test_save_keeps_the_small_files_and_restore_gives_a_store_that_resumes(root):
    proc = stores_sh(root, "save", "smoke")
    assert proc.returncode == 0, proc.stderr
    kept = root / "docs" / "results" / "stores" / "smoke"
    names = {p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()}
    assert {"matrix.yaml", "cells.json"} <= names
    assert not any(n.endswith(".pt") or n.startswith("first") for n in names), names
    assert sum(n.endswith("/result.json") for n in names) == 4
    assert "saved 4 cells" in proc.stdout
    assert not list((root / "docs" / "results" / "stores").glob(".save.*"))  # no leftovers

    original = summaries(load_results([root / "results" / "smoke"]))
    shutil.rmtree(root / "results")
    proc = stores_sh(root, "restore")
    assert proc.returncode == 0, proc.stderr
    assert "restored 4 of 4 committed cells" in proc.stdout
    restored = root / "results" / "smoke"
    # every cell of the matrix counts as finished there: `lrbench run --resume` skips it
    cells = expand_cells(load_config(REPO / "configs" / "smoke.yaml", SMOKE_FAST))
    assert all(finished(cell_dir(restored, c), c) for c in cells)
    # and a report reads the same values from it
    again = summaries(load_results([restored]))
    key = ["scenario", "strategy", "seed"]
    a = original.sort_values(key).reset_index(drop=True)
    b = again.sort_values(key).reset_index(drop=True)
    assert len(a) == 4 and (a["final_seen"] > 0).all()
    for col in ("final_seen", "avg_incremental", "last_task", "final_nri"):
        assert a[col].tolist() == b[col].tolist(), col


def test_restore_never_replaces_a_file_of_the_live_store(root):
    assert stores_sh(root, "save", "smoke").returncode == 0
    live = root / "results" / "smoke"
    first, *_, gone = sorted(live.glob("cells/*"))
    result = first / "result.json"
    result.write_text("newer\n")
    shutil.rmtree(gone)
    proc = stores_sh(root, "restore", "smoke")
    assert proc.returncode == 0 and "restored 1 of 4 committed cells" in proc.stdout
    assert result.read_text() == "newer\n" and (gone / "result.json").is_file()


def test_save_refuses_a_live_store_with_fewer_cells_than_the_committed_one(root):
    """A store run where the committed one was not restored first would drop its cells."""
    assert stores_sh(root, "save", "smoke").returncode == 0
    kept = root / "docs" / "results" / "stores" / "smoke"
    before = sorted(p.name for p in kept.glob("cells/*"))
    shutil.rmtree(sorted((root / "results" / "smoke").glob("cells/*"))[0])
    proc = stores_sh(root, "save", "smoke")
    assert proc.returncode == 2 and "holds 3 cells, the committed" in proc.stderr
    assert "restore it first" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in kept.glob("cells/*")) == before
    proc = stores_sh(root, "save", "--force", "smoke")
    assert proc.returncode == 0 and len(list(kept.glob("cells/*"))) == 3


@pytest.mark.parametrize("args, message", [
    (["save", "nothing"], "is not a results store"),
    (["restore", "nothing"], "no committed store"),
    (["push", "smoke"], "usage:"),
    ([], "usage:"),
])
def test_bad_use_is_one_line_and_exit_2(root, args, message):
    proc = stores_sh(root, *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert not (root / "docs" / "results" / "stores" / "nothing").exists()


def committed_stores() -> list[Path]:
    return sorted(p for p in COMMITTED.iterdir() if p.is_dir() and not p.name.startswith(".")
                  ) if COMMITTED.is_dir() else []


@pytest.mark.parametrize("store", committed_stores(), ids=lambda p: p.name)
def test_a_committed_store_is_whole(store):
    """Its cells.json names the matrix's cells with their config hashes; each saved result
    is one of them, with that hash, readable, and only the kept files are there."""
    ids = json.loads((store / "cells.json").read_text())
    assert (store / "matrix.yaml").is_file() and ids
    results = sorted(store.glob("cells/*/result.json"))
    assert results
    for path in results:
        result = read_result(path)
        assert path.parent.name in ids, path
        if result.get("status") == "finished":
            assert result["config_hash"] == ids[path.parent.name], path
    extra = [p for p in store.rglob("*") if p.is_file() and p.name not in
             {"matrix.yaml", "cells.json", "skipped.json", "result.json", "log.txt",
              "tuning.csv", "tuning.md", "tuned.yaml"}]
    assert not extra, extra
