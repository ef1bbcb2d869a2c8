"""MLflow tracking: runs read back with MLflow's own client from a real local store and
compared with the cells' result.json, under --jobs 2 and under Ray (the session's tracked
smoke runs, shared with test_runner's equal-numbers tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SMOKE_FAST, tracked
from test_runner import SMOKE, results

from benchmarks.config import expand_cells, load_config
from benchmarks.run.tracking import resolve_uri
from benchmarks.runner import run_matrix

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402


def client_for(mlruns: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=resolve_uri(str(mlruns))[0])


def runs_of(mlruns: Path, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of an experiment, read back from the store."""
    client = client_for(mlruns)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, experiment
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def expected_series(result: dict) -> dict[str, list[tuple[int, float]]]:
    """What each metric's history must be, written out from result.json by hand:
    (experience, value) pairs."""
    p = result["payload"]
    want: dict[str, list[tuple[int, float]]] = {}
    for k, curve in p["seen"]["recall"].items():
        want[f"seen.recall_at_{k}"] = list(enumerate(curve))
    want["seen.map_at_r"] = list(enumerate(p["seen"]["map_at_r"]))
    for k, mat in p["r_matrix"]["recall"].items():
        for j in range(len(mat)):
            want[f"task{j}.recall_at_{k}"] = [(i, row[j]) for i, row in enumerate(mat)]
    mat = p["r_matrix"]["map_at_r"]
    for j in range(len(mat)):
        want[f"task{j}.map_at_r"] = [(i, row[j]) for i, row in enumerate(mat)]
    for term, values in p["losses"].items():
        name = "steps" if term == "steps" else f"loss.{term}"
        pairs = [(i, v) for i, v in enumerate(values) if v is not None]
        if pairs:
            want[name] = pairs
    last = p["num_experiences"] - 1
    for key, v in p["summary"].items():
        if isinstance(v, list):
            for j, x in enumerate(v):
                if x is not None:
                    want[f"summary.{key}.task{j}"] = [(last, x)]
        elif v is not None:
            want[f"summary.{key}"] = [(last, v)]
    return want


@pytest.mark.parametrize("store_fixture, experiment", [("jobs2_store", "smoke-jobs2"),
                                                       ("ray_store", "smoke-ray")])
def test_one_parent_and_one_child_per_cell_equal_to_result_json(
        store_fixture, experiment, mlruns, request, tmp_path):
    store = request.getfixturevalue(store_fixture)
    client = client_for(mlruns)
    parents, children = runs_of(mlruns, experiment)
    assert len(parents) == 1 and parents[0].data.tags["lrbench.store"] == str(store.resolve())
    assert parents[0].info.status == "FINISHED"
    stored = results(store)
    assert sorted(r.info.run_name for r in children) == sorted(stored)
    for run in children:
        res = stored[run.info.run_name]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["config_hash"] == res["config_hash"]
        assert params["training.lr"] == str(res["config"]["training"]["lr"])
        assert params["strategy"] == res["config"]["strategy"]
        assert json.loads(params["evaluation.ks"]) == res["config"]["evaluation"]["ks"]
        want = expected_series(res)
        assert set(run.data.metrics) == set(want)
        for name, pairs in want.items():
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted((m.step, m.value) for m in history) == pairs, name
        got = Path(client.download_artifacts(run.info.run_id, "result.json", str(tmp_path)))
        assert got.read_bytes() == (store / "cells" / res["id"] / "result.json").read_bytes()
    files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"matrix.yaml", "results.csv"} <= files


def test_tracking_changes_no_hash_and_no_matrix(smoke_store, tmp_path, mlruns):
    """The tracking and slurm sections hash nothing, and a store run without them is the
    same matrix when a rerun turns tracking on: its cells are kept, logged from their
    result.json, and a second rerun logs nothing twice."""
    plain = load_config(SMOKE, SMOKE_FAST)
    uri = tmp_path / "mlruns"
    on = load_config(SMOKE, [*SMOKE_FAST, *tracked(uri, "rerun"), "slurm.partition=gpu"])
    assert [c.hash for c in expand_cells(plain)] == [c.hash for c in expand_cells(on)]
    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    before = {p: p.read_bytes() for p in store.glob("cells/*/result.json")}
    logged = []
    for _ in range(2):
        counts = run_matrix(on, store, progress=False)
        assert counts["skipped"] == 4 and counts["finished"] == 0
        parents, children = runs_of(uri, "rerun")
        assert len(parents) == 1 and sorted(r.info.run_name for r in children) == sorted(
            results(store))
        logged.append({r.info.run_id for r in children})
    assert logged[0] == logged[1]  # the second rerun logged nothing again
    assert {p: p.read_bytes() for p in before} == before


def test_a_tracking_failure_mid_run_is_one_warning_and_loses_nothing(
        smoke_store, tmp_path, capsys, monkeypatch):
    """MLflow failing while the matrix runs (a server gone, a full disk) warns once in one
    line and stops tracking; the cell still trains and its result is written, and a rerun
    of the same command logs the missing run."""
    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    redo = store / "cells" / "synth-tiny__finetune__seed1"
    shutil.rmtree(redo)
    real = MlflowClient.create_run
    calls = []

    def failing(self, experiment_id, *args, run_name=None, **kwargs):
        calls.append(run_name)
        if run_name == redo.name:  # the cell trained in this run: logged mid-run
            raise OSError("database is locked")
        return real(self, experiment_id, *args, run_name=run_name, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_run", failing)
    uri = tmp_path / "mlruns"
    config = load_config(SMOKE, [*SMOKE_FAST, *tracked(uri, "broken")])
    counts = run_matrix(config, store, progress=False)
    assert counts["finished"] == 1 and counts["skipped"] == 3
    assert json.loads((redo / "result.json").read_text())["status"] == "finished"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "database is locked" in warnings[0]
    assert redo.name in warnings[0] and "rerun the same command" in warnings[0]
    assert calls[-1] == redo.name  # tracking stopped after the failure
    assert len(runs_of(uri, "broken")[1]) == 3
    monkeypatch.setattr(MlflowClient, "create_run", real)
    assert run_matrix(config, store, progress=False)["skipped"] == 4
    parents, children = runs_of(uri, "broken")
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == sorted(
        results(store))


def test_lrbench_report_attaches_the_report_to_the_parent_run(jobs2_store, mlruns, tmp_path,
                                                              capsys):
    from benchmarks.cli import main

    out = tmp_path / "report"
    assert main(["report", str(jobs2_store), "--out", str(out), "--format", "md,csv"]) == 0
    assert "logged to the store's MLflow parent run as report/" in capsys.readouterr().out
    (parent,), _ = runs_of(mlruns, "smoke-jobs2")
    client = client_for(mlruns)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in logged
    got = Path(client.download_artifacts(parent.info.run_id, "report/report.md",
                                         str(tmp_path / "back")))
    assert got.read_bytes() == (out / "report.md").read_bytes()


def test_a_report_run_where_the_tracking_folder_is_not_creates_none(jobs2_store, tmp_path,
                                                                    monkeypatch, capsys):
    """A relative tracking folder is read from the working folder: a report run elsewhere
    has no store to attach to, and must not leave an empty MLflow store behind."""
    from benchmarks.cli import main

    pytest.importorskip("mlflow")
    store = tmp_path / "store"
    shutil.copytree(jobs2_store, store)
    matrix = yaml.safe_load((store / "matrix.yaml").read_text())
    assert matrix["tracking"]["mlflow"]
    matrix["tracking"]["uri"] = "mlruns"  # relative, as the default is
    (store / "matrix.yaml").write_text(yaml.safe_dump(matrix, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(store), "--out", str(tmp_path / "r"), "--format", "csv"]) == 0
    assert "MLflow" not in capsys.readouterr().out
    assert not (tmp_path / "mlruns").exists()


def test_command_line_flags_set_the_tracking_and_slurm_sections():
    """--track / --tracking-uri / --experiment and the --slurm-* flags are the matrix file's
    tracking: and slurm: sections, winning over the file and --set."""
    from benchmarks.cli import build_parser, run_overrides

    def config(*flags: str):
        return load_config(SMOKE, run_overrides(build_parser().parse_args(
            ["run", str(SMOKE), "--set", "slurm.partition=cpu", *flags])))

    plain = config()
    assert not plain.tracking.mlflow and plain.slurm.partition == "cpu"
    off = {"wandb": False, "wandb_project": None, "wandb_entity": None}
    assert config("--track").tracking.model_dump() == {
        "mlflow": True, "uri": None, "experiment": None, **off}
    assert config("--wandb").tracking.model_dump() == {
        "mlflow": False, "uri": None, "experiment": None, **off, "wandb": True}
    on = config("--tracking-uri", "runs/here", "--experiment", "e1", "--slurm-partition",
                "gpu", "--slurm-time", "30", "--slurm-cpus", "4", "--slurm-gpus", "1",
                "--slurm-mem", "16", "--slurm-cluster", "local", "--slurm-folder", "/x/y")
    assert on.tracking.model_dump() == {"mlflow": True, "uri": "runs/here",
                                        "experiment": "e1", **off}
    assert on.slurm.model_dump() == {"cluster": "local", "partition": "gpu", "time_min": 30,
                                     "cpus": 4, "gpus": 1, "mem_gb": 16.0,
                                     "array_parallelism": 256, "folder": "/x/y"}
