"""lrbench tune: same trial budget per strategy, validation split only, resumable through
the store, deterministic under the sampler's seed (tiny synth-fg matrix, 1 seed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.errors import LrbenchError
from benchmarks.tune import _with_validation, cell_objective

pytest.importorskip("optuna")

MATRIX = {
    "name": "tiny",
    "seeds": [0],
    "scenarios": [{"name": "synth-tiny", "dataset": "synth-fg", "schedule": "4+4",
                   "image_size": 32, "validation": 0.3,
                   "dataset_kwargs": {"num_classes": 8, "train_per_class": 10,
                                      "test_per_class": 6}}],
    "model": {"trunk": "small_cnn", "dim": 16, "pool": "avg"},
    "training": {"p": 4, "k": 3, "iterations": 3, "lr": 0.002},
    "strategies": {"finetune": {}, "l2_kd": {},
                   "l2-fixed": {"strategy": "l2_kd", "lam": 2.0}},  # nothing left to search
    "evaluation": {"ks": [1, 2], "map_at_r": False},
}


def write_matrix(folder: Path, data: dict) -> str:
    path = folder / "matrix-in.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def snapshot(store: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted((store / "cells").glob("*/result.json"))}


def rows(store: Path) -> list[dict[str, str]]:
    with open(store / "tuning.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    path = write_matrix(folder, MATRIX)
    store = folder / "store"
    argv = ["tune", path, "--trials", "2", "--out", str(store), "--seed", "3"]
    assert main(argv) == 0
    return path, store, argv


def test_every_strategy_gets_the_same_budget_on_validation(tuned):
    _, store, _ = tuned
    trials = rows(store)
    assert [(r["strategy"], r["label"]) for r in trials] == [
        ("finetune", "finetune-t000"), ("l2_kd", "l2_kd-t000"), ("l2_kd", "l2_kd-t001"),
        ("l2-fixed", "l2-fixed-t000")]
    params = [json.loads(r["params"]) for r in trials]
    assert params[0] == {} and params[3] == {}  # finetune, and lam fixed by the matrix
    assert params[1] == {"lam": 1.0}  # trial 0: the matrix's (default) value
    assert params[2]["lam"] != 1.0 and 0.01 <= params[2]["lam"] <= 100.0
    for r in trials:  # each trial's cells trained and evaluated on the validation split
        result = json.loads((store / "cells" / f"synth-tiny__{r['label']}__seed0"
                             / "result.json").read_text())
        assert result["config"]["scenario"]["validation"] == 0.3
        for key, value in json.loads(r["params"]).items():
            assert result["config"]["hparams"][key] == value
        value = cell_objective(result["payload"], "final_seen", ("recall", "1"))
        assert float(r["mean"]) == pytest.approx(value)
        assert r["ci_low"] == "" and r["seeds"] == "1"  # one seed: no CI
    l2 = [r for r in trials if r["strategy"] == "l2_kd"]
    best = max(l2, key=lambda r: (float(r["mean"]), -int(r["trial"])))
    assert [r["chosen"] for r in l2] == [str(r is best) for r in l2]
    assert "| l2_kd | 1 |" in (store / "tuning.md").read_text()


def test_tuned_matrix_has_the_chosen_values_and_no_validation(tuned):
    _, store, _ = tuned
    text = (store / "tuned.yaml").read_text()
    assert text.startswith("# Tuned by 'lrbench tune") and "2 trial(s) per strategy" in text
    data = yaml.safe_load(text)
    chosen = next(r for r in rows(store) if r["strategy"] == "l2_kd" and r["chosen"] == "True")
    assert data["strategies"] == {"finetune": {}, "l2_kd": json.loads(chosen["params"]),
                                  "l2-fixed": {"strategy": "l2_kd", "lam": 2.0}}
    assert "validation" not in data["scenarios"][0] and data["name"] == "tiny-tuned"
    from benchmarks.config import load_config

    assert load_config(store / "tuned.yaml").scenarios[0].validation is None


def test_second_call_trains_nothing_and_chooses_the_same(tuned, capsys):
    _, store, argv = tuned
    before, tuned_yaml = snapshot(store), (store / "tuned.yaml").read_bytes()
    assert main(argv) == 0
    assert "0 cell(s) trained now" in capsys.readouterr().out
    assert snapshot(store) == before and (store / "tuned.yaml").read_bytes() == tuned_yaml


def test_same_seed_same_trials_in_a_fresh_store(tuned, tmp_path):
    """The same seed gives the same trials, and sharing the first experience between
    trials changes no value: a fresh store tuned with --no-shared-first equals it bit for
    bit in every cell's payload."""
    path, store, argv = tuned
    other = tmp_path / "again"
    assert main([*argv[:-4], "--out", str(other), "--seed", "3", "--no-shared-first"]) == 0
    assert [(r["label"], r["params"], r["mean"], r["chosen"]) for r in rows(other)] == [
        (r["label"], r["params"], r["mean"], r["chosen"]) for r in rows(store)]

    def payloads(folder: Path) -> dict[str, tuple[str, dict]]:
        out = {}
        for f in sorted((folder / "cells").glob("*/result.json")):
            payload = json.loads(f.read_text())["payload"]
            timings = payload.pop("timings")
            out[f.parent.name] = (json.dumps(payload, sort_keys=True), timings)
        return out

    shared, alone = payloads(store), payloads(other)
    assert list(shared) == list(alone) and len(shared) == 4
    for cell in shared:
        assert shared[cell][0] == alone[cell][0], cell
        assert not alone[cell][1]["shared_first_experience"]
    # lam is inactive in the first experience: l2_kd's later trial and the fixed-lam
    # entry resumed from trial 0's, which trained it; finetune has no such twin
    took = {cell for cell, (_, t) in shared.items() if t["shared_first_experience"]}
    assert took == {"synth-tiny__l2_kd-t001__seed0", "synth-tiny__l2-fixed-t000__seed0"}
    for cell in took:
        assert shared[cell][1]["resumed_after"] == 1
        assert len(shared[cell][1]["per_experience_s"]) == 1  # only the second was timed
    assert not (store / "first").exists()  # removed when the tuning ended


def test_a_scenario_without_validation_is_refused_or_given_one(tmp_path, capsys):
    data = json.loads(json.dumps(MATRIX))
    del data["scenarios"][0]["validation"]
    path = write_matrix(tmp_path, data)
    assert main(["tune", path, "--trials", "1", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no validation split" in err[0] and "--validation" in err[0]
    assert not (tmp_path / "s").exists()  # refused before anything is written
    added = _with_validation({**data, "scenarios": [*data["scenarios"], "synth-ci"]}, 0.2, "m")
    assert [sc["validation"] for sc in added["scenarios"]] == [0.2, 0.2]
    assert added["scenarios"][1] == {"protocol": "synth-ci", "validation": 0.2}
    with pytest.raises(LrbenchError, match="has no validation split"):
        _with_validation(data, None, "m")


def test_a_bad_set_is_blamed_on_the_flag(tmp_path, capsys):
    path = write_matrix(tmp_path, MATRIX)
    assert main(["tune", path, "--trials", "1", "--out", str(tmp_path / "s"),
                 "--set", "training.lr=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lrbench: error: --set 'training.lr=-1'")
    assert not (tmp_path / "s").exists()


def test_a_test_store_is_never_a_tuning_store(tuned, smoke_store, capsys):
    path, _, _ = tuned
    assert main(["tune", path, "--trials", "1", "--out", str(smoke_store)]) == 2
    assert "holds another matrix than the tuning store" in capsys.readouterr().err
