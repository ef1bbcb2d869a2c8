"""docs/results/pipeline.sh, with lrbench and Python replaced by stubs that log what they
are asked and write the files a run would: the steps run in the data's order, each store
is saved when its run ends (a failed run's too, then the pipeline stops), the ablation
store gets the CUB store's shared cells, and a committed store is restored first."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

# lrbench: logs its arguments; `tune ... --out DIR` and `run CONFIG` write a store with one
# finished cell per name in $CELLS_<step> (and exit $FAIL_<step>, default 0)
LRBENCH = r"""#!/usr/bin/env bash
printf 'lrbench' >> "$LOG"; printf ' %q' "$@" >> "$LOG"; echo >> "$LOG"
cmd=$1; config=$2
if [[ " $* " == *" --check-determinism "* ]]; then  # the machine check
    [ -n "${CHECK_SAYS:-}" ] && echo "$CHECK_SAYS"
    exit "${CHECK_EXIT:-0}"
fi
name=$(basename "$config" .yaml)
[ "$cmd" = tune ] && name=$name-tune
out=results/$name
mkdir -p "$out/cells"
echo "name: $name" > "$out/matrix.yaml"
echo "{}" > "$out/cells.json"
[ "$cmd" = tune ] && echo "strategies: {}" > "$out/tuned.yaml"
key=$(echo "$name" | tr '-' '_')
cells_var=CELLS_$key; fail_var=FAIL_$key
for c in ${!cells_var:-x__finetune__seed0}; do
    mkdir -p "$out/cells/$c"
    echo '{"status": "finished"}' > "$out/cells/$c/result.json"
done
exit "${!fail_var:-0}"
"""
PY = """#!/usr/bin/env bash
echo "python $*" >> "$LOG"
"""
REGENERATE = """#!/usr/bin/env bash
echo "regenerate" >> "$LOG"
"""


@pytest.fixture()
def sandbox(tmp_path) -> Path:
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    for name in ("pipeline.sh", "stores.sh"):
        shutil.copy(REPO / "docs" / "results" / name, results / name)
    (results / "regenerate.sh").write_text(REGENERATE)
    for name, text in (("lrbench", LRBENCH), ("python", PY)):
        path = tmp_path / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return tmp_path


def pipeline(root: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = root / "log.txt"
    full = {**os.environ, "LRBENCH": str(root / "bin" / "lrbench"),
            "PY": str(root / "bin" / "python"), "LRBENCH_DATA": str(root / "data"),
            "LOG": str(log), **env}
    proc = subprocess.run(["bash", str(root / "docs" / "results" / "pipeline.sh")],
                          capture_output=True, text=True, env=full, timeout=600)
    return proc, log.read_text().splitlines() if log.is_file() else []


def test_every_step_in_order_each_store_saved(sandbox):
    proc, log = pipeline(sandbox, CELLS_thesis_cub_subset="cub__finetune__seed0 "
                         "cub__fecd__seed0 cub__joint__seed0")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[:3] for line in log] == [
        ["lrbench", "tune", "configs/thesis-cub-subset-val-more.yaml"],
        ["python", "docs/results/configs_from_tuning.py"],
        ["lrbench", "run", "configs/thesis-cub-subset.yaml"],
        ["lrbench", "run", "configs/thesis-cub-subset-ablations.yaml"],
        ["lrbench", "run", "configs/thesis-lifelong.yaml"],
        ["lrbench", "run", "configs/thesis-lifelong-orders.yaml"],
        ["lrbench", "run", "configs/thesis-cub-subset-confirm.yaml"],
        ["regenerate"]]
    assert all("--jobs 2" in line for line in log if line.startswith("lrbench"))
    stores = sandbox / "docs" / "results" / "stores"
    assert sorted(p.name for p in stores.iterdir()) == [
        "thesis-cub-subset", "thesis-cub-subset-ablations", "thesis-cub-subset-confirm",
        "thesis-cub-subset-val-more-tune", "thesis-lifelong", "thesis-lifelong-orders"]
    assert (stores / "thesis-cub-subset-val-more-tune" / "tuned.yaml").is_file()
    assert (sandbox / "docs" / "results" / "tuning-more" / "tuned.yaml").is_file()
    # the CUB store's finetune and fecd cells were copied into the ablation store
    ablation = sandbox / "results" / "thesis-cub-subset-ablations" / "cells"
    assert {"cub__finetune__seed0", "cub__fecd__seed0"} <= {p.name for p in ablation.iterdir()}
    assert not (ablation / "cub__joint__seed0").exists()


def test_a_failed_run_is_saved_and_stops_the_pipeline(sandbox):
    proc, log = pipeline(sandbox, FAIL_thesis_lifelong="1",
                         CELLS_thesis_lifelong="life__finetune__seed0 life__lwf__seed0")
    assert proc.returncode == 1
    assert "thesis-lifelong: the command ended with exit code 1" in proc.stderr
    assert log[-1].startswith("lrbench run configs/thesis-lifelong.yaml")  # nothing after
    saved = sandbox / "docs" / "results" / "stores" / "thesis-lifelong" / "cells"
    assert sorted(p.name for p in saved.iterdir()) == ["life__finetune__seed0",
                                                       "life__lwf__seed0"]


def test_a_committed_store_is_restored_before_anything_runs(sandbox):
    committed = sandbox / "docs" / "results" / "stores" / "thesis-cub-subset-val-more-tune"
    (committed / "cells" / "old__bct__seed100").mkdir(parents=True)
    (committed / "cells" / "old__bct__seed100" / "result.json").write_text("{}\n")
    (committed / "matrix.yaml").write_text("name: t\n")
    proc, _ = pipeline(sandbox)
    assert proc.returncode == 0, proc.stderr
    live = sandbox / "results" / "thesis-cub-subset-val-more-tune" / "cells"
    assert (live / "old__bct__seed100" / "result.json").is_file()
    assert "restored 1 of 1 committed cells" in proc.stdout


def committed_cub_store(sandbox: Path) -> None:
    """A committed CUB store holding the machine check's cell."""
    committed = sandbox / "docs" / "results" / "stores" / "thesis-cub-subset"
    cell = committed / "cells" / "cub-subset-50+5x10__first_session__seed0"
    cell.mkdir(parents=True)
    (cell / "result.json").write_text('{"status": "finished"}\n')
    (committed / "matrix.yaml").write_text("name: thesis-cub-subset\n")


AGAINST = ("cub-subset-50+5x10__first_session__seed0: against results/thesis-cub-subset's "
           "result (commit abc, X): identical metric values")


def test_a_stored_cell_is_recomputed_first_and_must_match(sandbox):
    """Where the CUB store holds first_session seed 0, it is recomputed against the store
    (--check-determinism) before anything else runs, the tuning included; a machine that
    computes other values (exit 1), a check that fails otherwise, or one that found no
    stored cell to compare with stops the pipeline there, in one line, and nothing runs."""
    committed_cub_store(sandbox)
    proc, log = pipeline(sandbox, CHECK_SAYS=AGAINST)
    assert proc.returncode == 0, proc.stderr
    assert "--check-determinism" in log[0] and len(log) > 1  # first, then the rest
    assert log[0].startswith("lrbench run configs/thesis-cub-subset.yaml --out "
                             "results/thesis-cub-subset --check-determinism --set "
                             r"seeds=\[0\] --set strategies=\{first_session:\ \{\}\}")
    assert sum("--check-determinism" in line for line in log) == 1
    for env, said in (({"CHECK_SAYS": "x", "CHECK_EXIT": "1"}, "this machine does not "
                       "reproduce the stores' values (above): run the pipeline on the CPU "
                       "that wrote them, or move results/ and docs/results/stores/ aside to "
                       "compute every store anew here"),
                      ({"CHECK_EXIT": "2"}, "the machine check itself failed (exit 2, "
                       "above): fix that and run the pipeline again"),
                      ({"CHECK_SAYS": "no store"}, "the machine check found no stored "
                       "cub-subset-50+5x10__first_session__seed0 to compare with (above): "
                       "restore the committed stores (bash docs/results/stores.sh restore)")):
        shutil.rmtree(sandbox / "results")
        (sandbox / "log.txt").unlink()
        proc, log = pipeline(sandbox, **env)
        assert proc.returncode == int(env.get("CHECK_EXIT", "1")), proc.stderr
        assert len(log) == 1 and "--check-determinism" in log[0]  # nothing ran after it
        ours = [line for line in proc.stderr.splitlines() if line.startswith("pipeline:")]
        assert ours == [f"pipeline: {said}"]


def test_no_data_folder_is_one_line_and_exit_2(sandbox):
    env = {k: v for k, v in os.environ.items() if k != "LRBENCH_DATA"}
    proc = subprocess.run(["bash", str(sandbox / "docs" / "results" / "pipeline.sh")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "set LRBENCH_DATA" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
