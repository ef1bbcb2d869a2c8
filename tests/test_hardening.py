"""Issue #18, "no input loses a result": a damaged store, a changed matrix, an interrupted
writer, a lock of a lost host, and the bounds of the matrix file. Each problem is reproduced;
where lrbench gives advice, the test follows it and checks that it works."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from benchmarks.cli import main
from benchmarks.config import (
    MAX_NODES,
    MatrixFileError,
    _StrictLoader,
    expand_cells,
    load_config,
)
from benchmarks.errors import LrbenchError
from benchmarks.run.preflight import check_dataset_kwargs
from benchmarks.run.store import lock_free, store_lock

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
FAST = ["--set", "training.iterations=3"]  # the smoke store's budget


def copy_store(smoke_store: Path, tmp: Path) -> Path:
    store = tmp / "store"
    shutil.copytree(smoke_store, store)
    return store


def r_matrices(store: Path) -> dict[str, object]:
    return {p.parent.name: json.loads(p.read_text())["payload"]["r_matrix"]
            for p in sorted(store.glob("cells/*/result.json"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_damaged_results_are_one_line_and_the_advice_recomputes_them(smoke_store, tmp_path,
                                                                     capsys):
    store = copy_store(smoke_store, tmp_path)
    before = r_matrices(store)
    damages = {  # cell -> its result.json rewritten
        "synth-tiny__finetune__seed0": lambda r: [],
        "synth-tiny__finetune__seed1": lambda r: {k: v for k, v in r.items() if k != "payload"},
        "synth-tiny__l2_kd__seed0": lambda r: {**r, "payload": {**r["payload"], "summary": 3}},
        "synth-tiny__l2_kd__seed1": lambda r: {**r, "payload": {**r["payload"], "r_matrix": {
            "recall": {"1": [[0.1, 0.2, 0.3], [0.1], [0.1, 0.2, 0.3]]}}}},
    }
    for cell, edit in damages.items():
        path = store / "cells" / cell / "result.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 2
    err = one_line(capsys.readouterr().err)
    assert "synth-tiny__finetune__seed0/result.json: damaged result (a JSON list" in err
    advice = re.search(r"recompute it with 'lrbench run (\S+) --out (\S+)'", err)
    assert advice, err
    # the advice: run the store's own matrix into it; every damaged cell is recomputed
    assert main(["run", advice.group(1), "--out", advice.group(2)]) == 0
    out = capsys.readouterr()
    notes = [line for line in out.err.splitlines() if "damaged result" in line]
    assert len(notes) == 4 and all("recomputing the cell" in n for n in notes), out.err
    assert "4 finished, 0 skipped" in out.out
    for cell in damages:  # nothing is lost: each damaged file is kept beside the new one
        assert (store / "cells" / cell / "result.json.damaged").is_file()
    assert r_matrices(store) == before  # same config and seed: the same numbers
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0


def test_report_out_unwritable_then_another_out_works(smoke_store, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(smoke_store), "--out", str(blocker / "report")]) == 2
    assert "choose another --out" in one_line(capsys.readouterr().err)
    assert main(["report", str(smoke_store), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()


def test_resume_with_a_changed_matrix_keeps_stale_cells_out_of_every_table(
        smoke_store, tmp_path, capsys):
    from reports.load import load_results

    store = copy_store(smoke_store, tmp_path)
    stale = sorted(p.name for p in store.glob("cells/*l2_kd*"))
    assert main(["run", str(SMOKE), "--out", str(store), "--resume", *FAST,
                 "--set", "strategies={finetune: {}}"]) == 0
    out = capsys.readouterr()
    assert "0 finished, 2 skipped" in out.out  # finetune's cells still match
    assert "l2_kd" not in out.out  # the summary: cells of the current matrix only
    notes = [line for line in out.err.splitlines() if "stale" in line]
    assert notes == [f"lrbench: note: 2 stale cells of synth-tiny / l2_kd (seed0, seed1) in "
                     f"{str(store)!r}: not in its current matrix, kept on disk, left out of "
                     "the tables"], out.err
    assert sorted(p.name for p in store.glob("cells/*l2_kd*")) == stale  # kept on disk
    with open(store / "results.csv") as fh:
        assert {row.split(",")[1] for row in fh.read().splitlines()[1:]} == {"finetune"}
    results = load_results([store])
    assert set(results.cells.strategy) == {"finetune"}
    assert sorted(p.name for p in results.stale) == stale
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "2 stale cells" in line]) == 1
    assert "l2_kd" not in (tmp_path / "report" / "report.md").read_text()


def test_a_cell_whose_config_changed_but_did_not_rerun_is_left_out_of_the_report(
        smoke_store, tmp_path, capsys):
    """--resume with l2_kd's lam changed, interrupted before its seed 1 reran: the report
    must not average the old seed with the new one under one label (same id, other hash:
    stale, by the store's cells.json)."""
    import benchmarks.run.cell as cell_mod
    from reports.load import load_results

    store = copy_store(smoke_store, tmp_path)
    real = cell_mod.run_cell

    def only_seed0(cell, *args, **kwargs):
        if cell.seed == 1:  # Ctrl-C: the run stops before l2_kd seed 1 reruns (a
            signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt without the signal
            # would be a failure of the cell's own code)
        return real(cell, *args, **kwargs)

    cell_mod.run_cell = only_seed0
    try:
        code = main(["run", str(SMOKE), "--out", str(store), "--resume", *FAST,
                     "--set", "strategies.l2_kd.lam=2.0"])
    finally:
        cell_mod.run_cell = real
    assert code == 130  # interrupted: l2_kd seed 0 reran with lam = 2, seed 1 did not
    capsys.readouterr()
    results = load_results([store])
    assert sorted(p.name for p in results.stale) == ["synth-tiny__l2_kd__seed1"]
    l2 = results.cells[results.cells.strategy == "l2_kd"]
    assert list(l2.seed) == [0]  # only the cell computed with lam = 2


def test_temporary_files_of_an_interrupted_writer_are_removed_by_the_next_run(
        smoke_store, tmp_path, capsys):
    store = copy_store(smoke_store, tmp_path)
    cell = store / "cells" / "synth-tiny__finetune__seed0"
    left = [cell / f".result.json.{os.getpid() + 1}.tmp", store / ".results.csv.7.tmp",
            store / ".results.parquet.7.tmp", cell / ".checkpoint.pt.7.tmp",
            store / "trained" / "0123456789abcdef" / ".exp001.pt.7.tmp"]
    left[-1].parent.mkdir(parents=True)
    for path in left:
        path.write_text('{"half": ')  # what kill -9 or a full disk leaves mid-write
    before = r_matrices(store)
    assert main(["run", str(SMOKE), "--out", str(store), *FAST]) == 0
    assert "0 finished, 4 skipped" in capsys.readouterr().out
    assert not [p for p in left if p.exists()]
    assert not list(store.rglob("*.tmp"))
    assert not (store / "trained").exists()  # the shared loops' folder with it
    assert r_matrices(store) == before


def test_a_lock_held_on_a_lost_host_names_it_and_the_advice_clears_it(tmp_path):
    """A holder on another host (file locks reaching across hosts, e.g. NFS) keeps the OS
    lock: the message names the host and pid and how to clear it if that host is gone;
    doing so lets the next runner in."""
    store = tmp_path / "shared"
    store.mkdir()
    other = FileLock(store / ".lock", timeout=0)  # the lost host's lock, still held
    other.acquire()
    try:
        (store / ".lock.owner").write_text("4242 lost-host.example\n")
        with pytest.raises(LrbenchError) as err, store_lock(store):
            pass
        msg = str(err.value)
        assert "(pid 4242 on lost-host.example); wait for it to finish" in msg
        files = re.search(r"if host 'lost-host.example' is gone for good, delete '(\S+)' and "
                          r"'(\S+)' and run again", msg)
        assert files, msg
        for name in files.groups():
            Path(name).unlink()
        with store_lock(store):
            assert (store / ".lock.owner").read_text().split()[0] == str(os.getpid())
        assert lock_free(store)
    finally:
        other.release()


def test_the_bounds_let_ordinary_yaml_through(tmp_path):
    """Anchors and aliases as people use them still load, to the same cells; the bounds
    sit far above any matrix and refuse just past them."""
    path = tmp_path / "m.yaml"
    path.write_text(SMOKE.read_text().replace("training: {", "training: &t {").replace(
        "l2_kd: {lam: 1.0}", "l2_kd: {lam: 1.0, training: *t}"))
    assert "*t" in path.read_text()
    assert [c.hash for c in expand_cells(load_config(path))] == \
        [c.hash for c in expand_cells(load_config(SMOKE))]
    assert yaml.load("[" * 60 + "]" * 60, Loader=_StrictLoader) is not None  # noqa: S506
    with pytest.raises(MatrixFileError, match="nested deeper than 64"):
        yaml.load("[" * 65 + "]" * 65, Loader=_StrictLoader)  # noqa: S506
    leaves = "a: &a [" + ", ".join(["1"] * 999) + "]\n"
    n = MAX_NODES // 1000 - 2  # 98 aliases of 1,000 values each: under the bound
    under, over = (leaves + "b: [" + ", ".join(["*a"] * m) + "]\n" for m in (n, n + 3))
    assert len(yaml.load(under, Loader=_StrictLoader)["b"]) == n  # noqa: S506
    with pytest.raises(MatrixFileError, match="once its aliases are expanded"):
        yaml.load(over, Loader=_StrictLoader)  # noqa: S506


def test_set_values_are_bounded_and_blamed(tmp_path):
    with pytest.raises(LrbenchError, match=r"^--set 'seeds=&a \[\*a\]': an alias refers"):
        load_config(SMOKE, ["seeds=&a [*a]"])
    with pytest.raises(LrbenchError, match=r"^--set 'model.dim=0': model.dim: Input should "
                                           r"be greater than or equal to 2"):
        load_config(SMOKE, ["model.dim=0"])
    with pytest.raises(LrbenchError, match=r"^--set 'strategies.l2_kd.lam=-1': "):
        load_config(SMOKE, ["strategies.l2_kd.lam=-1"])
    path = tmp_path / "smoke.yaml"  # a bad value of the file, with an unrelated --set
    path.write_text(SMOKE.read_text().replace("seeds: [0, 1]", "seeds: [0, true]"))
    with pytest.raises(LrbenchError, match=rf"^{re.escape(str(path))}: seeds.1: Value error, "
                                           "give a number, not true"):
        load_config(path, ["model.dim=8"])


def test_lifelong_dataset_kwargs_are_per_dataset():
    from types import SimpleNamespace

    from benchmarks.config import ScenarioSpec

    def cell(kwargs: dict) -> SimpleNamespace:
        return SimpleNamespace(scenario=ScenarioSpec(
            name="ll", datasets=["synth-fg", "synth-fg:glyphs"], dataset_kwargs=kwargs))

    check_dataset_kwargs([cell({"synth-fg": {"num_classes": 4}})])  # per dataset: fine
    with pytest.raises(LrbenchError, match="'synth-fgg' is not a dataset of this lifelong"):
        check_dataset_kwargs([cell({"synth-fgg": {"num_classes": 4}})])
    with pytest.raises(LrbenchError, match=r"dataset_kwargs.synth-fg: give synth-fg's keyword "
                                           "arguments as a mapping"):
        check_dataset_kwargs([cell({"synth-fg": 4})])
    with pytest.raises(LrbenchError, match=r"dataset_kwargs.synth-fg.seed: a yes/no value"):
        check_dataset_kwargs([cell({"synth-fg": {"seed": True}})])


def test_a_decompression_bomb_is_a_broken_file_not_a_traceback(tmp_path):
    from test_datasets import make_cub
    from test_errors import png_bomb

    from benchmarks.datasets import CUB200, check_images

    cub = make_cub(tmp_path)
    bomb = cub / "images" / "003.Bird_3" / "Bird_3_0000.jpg"
    png_bomb(bomb)
    ds = CUB200(cub, split="all")
    (bad,) = check_images(ds, progress=False)
    assert bad[0] == str(bomb) and "decompression bomb" in bad[1]
    index = [p for p, _ in ds.samples].index(str(bomb))
    with pytest.raises(LrbenchError, match="cannot decode image .*Bird_3_0000.jpg"):
        ds.load_image(index)


def test_an_error_inside_an_inline_scenario_names_its_field():
    """A scenario that may be a protocol name (a string) or an inline spec: an error inside
    the spec names the spec's field, not pydantic's union member (``scenarios.0.str``)."""
    from pydantic import ValidationError

    from benchmarks.config import ScenarioSpec, _format_error, _Strict

    class Matrix(_Strict):
        scenarios: list[str | ScenarioSpec]

    spec = {"name": "a", "dataset": "synth-fg", "schedule": "4+4"}
    for change, expected in (
            ({"image_size": "big"}, "f: scenarios.0.image_size: Input should be a valid "
                                    "integer"),
            ({"schedule": 4}, "f: scenarios.0.schedule: Input should be a valid string or a "
                              "valid list (got 4)"),
            ({"order": -2}, "f: scenarios.0.order: Input should be greater than or equal "
                            "to 0")):
        with pytest.raises(ValidationError) as err:
            Matrix.model_validate({"scenarios": [{**spec, **change}]})
        assert str(_format_error(err.value, "f")).startswith(expected)


def test_booleans_are_not_numbers_in_hyperparameters_either():
    with pytest.raises(LrbenchError, match=r"^--set 'strategies.l2_kd.lam=true': strategy "
                                           r"'l2_kd': hyperparameter 'lam': give a number, "
                                           r"not true"):
        load_config(SMOKE, ["strategies.l2_kd.lam=true"])
    # a yes/no hyperparameter still takes one; a number still takes a number
    config = load_config(SMOKE, ["strategies={fecd: {freeze_student_bn: true, lam: 2}}"])
    assert [c.hparams["freeze_student_bn"] for c in expand_cells(config)] == [True, True]
