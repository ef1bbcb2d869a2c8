"""lrbench tune: same trial budget per strategy, validation split only, resumable through
the store, deterministic under the sampler's seed (tiny synth-fg matrix, 1 seed)."""

from __future__ import annotations

import csv
import json
import math
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
    out, err = capsys.readouterr()
    assert "0 cell(s) trained now" in out
    # the later trials' cells on disk are the tuning's, not stale cells of a test matrix
    assert "stale cell" not in err
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


def test_each_strategy_gets_its_own_space_filling_start():
    """Two strategies with the same range get different points (their own sampler seeds),
    and a Sobol start of 4 points puts one in each quarter of a log range."""
    from benchmarks.tune import label_seed, sobol_points
    from strategies.registry import LogUniform

    space = {"lam": LogUniform(0.01, 100.0)}
    a = sobol_points(space, 4, label_seed(0, "mas"))
    b = sobol_points(space, 4, label_seed(0, "l2_kd"))
    assert a != b
    for points in (a, b):
        quarters = sorted(int((math.log10(p["lam"]) + 2) // 1) for p in points)
        assert quarters == [0, 1, 2, 3]  # log10 in [-2, -1), [-1, 0), [0, 1), [1, 2)
    assert sobol_points(space, 4, label_seed(0, "mas")) == a  # deterministic


def _toy(monkeypatch, optimum: float) -> list[float]:
    """Replace training by a toy objective of l2_kd's lam peaking at ``optimum`` (finetune
    scores a constant); returns the lam values evaluated, in order."""
    import benchmarks.runner
    import benchmarks.tune as tune_module

    seen: list[float] = []

    def fake_run(config, store, **kwargs):
        return {"finished": 0, "failed": 0, "skipped": 0}

    def fake_value(store, cells, objective, metric):
        lam = cells[0].hparams.get("lam")
        if lam is None:
            return {c.seed: 0.5 for c in cells}
        seen.append(lam)
        return {c.seed: -(math.log10(lam) - math.log10(optimum)) ** 2 for c in cells}

    monkeypatch.setattr(benchmarks.runner, "run_matrix", fake_run)
    monkeypatch.setattr(tune_module, "_trial_value", fake_value)
    return seen


TOY = {**MATRIX, "strategies": {"finetune": {}, "l2_kd": {}}}


def test_an_optimum_beyond_the_range_is_warned_about(tmp_path, monkeypatch, capsys):
    """lam's optimum at 1000 lies above the declared range [0.01, 100]: the best trial is
    the largest value tried, and tune says so in one line (and in tuning.md)."""
    seen = _toy(monkeypatch, 1000.0)
    path = write_matrix(tmp_path, TOY)
    assert main(["tune", path, "--trials", "5", "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(seen) == 5
    warn = [line for line in err if "warning" in line]
    assert len(warn) == 1 and "l2_kd lam: the best value" in warn[0]
    assert f"{max(seen):.4g} is the largest value tried" in warn[0]
    assert "--extend-edges" in warn[0]
    md = (tmp_path / "s" / "tuning.md").read_text()
    assert "| l2_kd | lam |" in md and "**no**: the largest tried" in md


def test_extend_edges_ends_with_the_optimum_bracketed(tmp_path, monkeypatch, capsys):
    """With --extend-edges 10 the search moves past the range's top, ten times at a time,
    until a value is worse: the chosen lam is then inside the values tried, and no
    warning is printed."""
    seen = _toy(monkeypatch, 1000.0)
    path = write_matrix(tmp_path, TOY)
    assert main(["tune", path, "--trials", "5", "--out", str(tmp_path / "s"),
                 "--extend-edges", "10", "--extend-rounds", "5"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    trials = [r for r in rows(tmp_path / "s") if r["strategy"] == "l2_kd"]
    kinds = [r["kind"] for r in trials]
    assert kinds[:5] == ["default", "sobol", "sobol", "sobol", "tpe"] and "extend" in kinds
    chosen = json.loads(next(r for r in trials if r["chosen"] == "True")["params"])["lam"]
    assert min(seen) < chosen < max(seen) and max(seen) > 100.0
    assert abs(math.log10(chosen) - 3) < 1.0  # within a factor of 10 of the optimum
    assert "| l2_kd | lam |" in (tmp_path / "s" / "tuning.md").read_text()


def test_an_edge_short_of_the_configs_bound_searches_up_to_that_bound():
    """A best value at the largest tried but short of where the Config stops (slda's
    shrinkage chosen at 0.65 of a range ending at 1, the Config taking at most 1): the
    extension past it (x 4 = 2.6) is refused, so the range's end (1) is tried instead;
    at the bound itself nothing further is left, and a log range's low side alike."""
    from benchmarks.tune_search import extension
    from strategies.registry import LogUniform, Uniform

    space, upto_one = LogUniform(1e-3, 1.0), (lambda v: 0 < v <= 1)
    assert extension(space, 0.65, "high", 4.0, upto_one) == 1.0
    assert extension(space, 1.0, "high", 4.0, upto_one) is None
    assert extension(space, 0.65, "high", 4.0) == pytest.approx(2.6)  # nothing refused
    assert extension(space, 0.002, "low", 4.0, lambda v: v >= 0.001) == 0.001
    assert extension(Uniform(0.0, 1.0), 0.9, "high", 4.0, upto_one) == 1.0


def test_an_optimum_inside_the_range_is_bracketed_without_extension(tmp_path, monkeypatch,
                                                                    capsys):
    _toy(monkeypatch, 1.5)
    path = write_matrix(tmp_path, TOY)
    assert main(["tune", path, "--trials", "6", "--out", str(tmp_path / "s")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "| l2_kd | lam |" in (tmp_path / "s" / "tuning.md").read_text()
    assert "| yes |" in (tmp_path / "s" / "tuning.md").read_text()


def test_tuning_seeds_are_kept_away_from_test_seeds(tmp_path, monkeypatch, capsys):
    """tuned.yaml records the seeds that tuned it; lrbench run refuses to reuse them unless
    told to; --test-seeds writes disjoint ones, and refuses overlapping ones."""
    _toy(monkeypatch, 1.5)
    path = write_matrix(tmp_path, TOY)
    assert main(["tune", path, "--trials", "2", "--out", str(tmp_path / "s")]) == 0
    tuned = tmp_path / "s" / "tuned.yaml"
    data = yaml.safe_load(tuned.read_text())
    assert data["tuned_on_seeds"] == [0] and data["seeds"] == [0]
    capsys.readouterr()
    assert main(["run", str(tuned), "--out", str(tmp_path / "t"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seeds 0 also tuned" in err[0]
    assert "--allow-tuning-seeds" in err[0] and not (tmp_path / "t").exists()
    assert main(["run", str(tuned), "--out", str(tmp_path / "t"), "--dry-run",
                 "--allow-tuning-seeds"]) == 0
    assert main(["tune", path, "--trials", "2", "--out", str(tmp_path / "s"),
                 "--test-seeds", "3,4"]) == 0
    data = yaml.safe_load(tuned.read_text())
    assert data["tuned_on_seeds"] == [0] and data["seeds"] == [3, 4]
    capsys.readouterr()
    assert main(["tune", path, "--trials", "2", "--out", str(tmp_path / "s"),
                 "--test-seeds", "0,4"]) == 2
    assert "--test-seeds 0 also tune" in capsys.readouterr().err


def test_also_tune_searches_a_training_option_for_every_strategy(tmp_path, monkeypatch):
    """--also-tune trunk_lr_mult adds it to every strategy's search (finetune too), trial 0
    at the matrix's value, and writes the choice into each strategy's training: override."""
    _toy(monkeypatch, 1.5)
    path = write_matrix(tmp_path, TOY)
    assert main(["tune", path, "--trials", "3", "--out", str(tmp_path / "s"),
                 "--also-tune", "trunk_lr_mult"]) == 0
    trials = rows(tmp_path / "s")
    assert [r["strategy"] for r in trials] == ["finetune"] * 3 + ["l2_kd"] * 3
    first = json.loads(trials[0]["params"])
    assert first == {"training.trunk_lr_mult": 1.0}
    assert all(0.01 <= json.loads(r["params"])["training.trunk_lr_mult"] <= 1.0
               for r in trials)
    data = yaml.safe_load((tmp_path / "s" / "tuned.yaml").read_text())
    for label in ("finetune", "l2_kd"):
        assert "trunk_lr_mult" in data["strategies"][label]["training"]
        assert not any(k.startswith("training.") for k in data["strategies"][label])


def test_a_failed_trial_names_its_reason_and_is_never_chosen(tmp_path, monkeypatch, capsys):
    """A trial whose cell raises (here l2_kd at any lam but its default 1.0, as mas did on
    a zero loss) is a failed trial: tune exits 1, the choice is among the others, and
    tuning.md and tuning.csv name the failed cell and the reason its result.json records,
    so a reader sees a bug that cost a strategy part of its budget."""
    from strategies.l2_kd import L2KD

    original = L2KD.before_backward

    def boom(self, strategy, **kwargs):  # noqa: ANN001
        if self.config.lam != 1.0:
            raise ValueError("Loss is not available")
        return original(self, strategy, **kwargs)

    monkeypatch.setattr(L2KD, "before_backward", boom)
    path = write_matrix(tmp_path, {**MATRIX, "strategies": {"finetune": {}, "l2_kd": {}}})
    store = tmp_path / "s"
    assert main(["tune", path, "--trials", "2", "--out", str(store), "--seed", "3"]) == 1
    assert "1 trial(s) failed (l2_kd-t001)" in capsys.readouterr().err
    trials = {r["label"]: r for r in rows(store)}
    assert trials["l2_kd-t001"]["status"] == "failed"
    assert trials["l2_kd-t001"]["reason"] == \
        "synth-tiny__l2_kd-t001__seed0: ValueError: Loss is not available"
    assert trials["l2_kd-t000"]["chosen"] == "True" and trials["l2_kd-t000"]["reason"] == ""
    md = (store / "tuning.md").read_text()
    assert "## Failed trials" in md
    assert "* l2_kd-t001: synth-tiny__l2_kd-t001__seed0: ValueError: Loss is not available" \
        in md


def test_cell_objective_reads_the_never_reindexed_curve():
    payload = {"seen": {"recall": {"1": [0.5, 0.4]}},
               "never_reindexed": {"recall": {"1": [0.5, 0.25]}, "map_at_r": [0.3, 0.2]},
               "r_matrix": {"recall": {"1": [[0.5, math.nan], [0.4, 0.6]]}}}
    assert cell_objective(payload, "final_nri", ("recall", "1")) == 0.25
    assert cell_objective(payload, "final_nri", ("map_at_r", None)) == 0.2
    assert cell_objective(payload, "final_seen", ("recall", "1")) == 0.4
    assert math.isnan(cell_objective({"seen": {}}, "final_nri", ("recall", "1")))


def test_every_declared_tuning_objective_is_an_objective():
    from benchmarks.tune_search import OBJECTIVES
    from strategies import available_strategies, get_strategy

    declared = {name: get_strategy(name).cls.tuning_objective
                for name in available_strategies()}
    assert all(o is None or o in OBJECTIVES for o in declared.values()), declared
    assert declared["sdc"] == declared["ldc"] == "final_nri"
    assert declared["finetune"] is None and declared["bct"] is None


def test_drift_compensation_is_tuned_on_the_never_reindexed_value(tmp_path, capsys):
    """sdc's sigma moves stored gallery vectors and nothing else: every trial's re-embedded
    union value is the wrapped finetune's, so its trials are scored (and chosen) by the
    final never-re-indexed value, and the outputs say so; finetune keeps the command's."""
    data = {**MATRIX, "strategies": {"finetune": {}, "sdc": {"sdc_on": "finetune"}}}
    store = tmp_path / "store"
    assert main(["tune", write_matrix(tmp_path, data), "--trials", "3", "--out", str(store),
                 "--seed", "1", "--also-tune", "lr"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("finetune ") and ": final_seen " in line for line in printed)
    assert any(line.startswith("sdc ") and ": final_nri " in line for line in printed)
    trials = rows(store)
    assert {r["strategy"]: r["objective"] for r in trials} == {"finetune": "final_seen",
                                                               "sdc": "final_nri"}
    sdc = [r for r in trials if r["strategy"] == "sdc"]
    assert len(sdc) == 3 and len({r["params"] for r in sdc}) == 3
    # --also-tune searches the training of finetune, not of sdc (it trains as finetune)
    assert all(set(json.loads(r["params"])) == {"sigma"} for r in sdc)
    assert all("training.lr" in json.loads(r["params"])
               for r in trials if r["strategy"] == "finetune" and r["trial"] != "0")
    seen, nri = [], []
    for r in sdc:
        payload = json.loads((store / "cells" / f"synth-tiny__{r['label']}__seed0"
                              / "result.json").read_text())["payload"]
        seen.append(cell_objective(payload, "final_seen", ("recall", "1")))
        nri.append(cell_objective(payload, "final_nri", ("recall", "1")))
        assert float(r["mean"]) == pytest.approx(nri[-1])
    assert len(set(seen)) == 1  # the same training whatever sigma: why final_seen is no use
    best = max(range(3), key=lambda i: (nri[i], -i))
    assert [r["chosen"] for r in sdc] == [str(i == best) for i in range(3)]
    text = (store / "tuning.md").read_text()
    assert "for sdc (declared by the strategy" in text and "final_nri of recall@1" in text
    assert "| sdc | 1 | sobol | sigma=" in text and "| final_nri |" in text
    assert "for sdc (declared by the strategy" in (store / "tuned.yaml").read_text()


def test_a_declared_objective_brings_its_own_direction(tmp_path, monkeypatch):
    """A strategy declaring a minimised objective (forgetting) under the default,
    maximised one is chosen by its smallest value, its edges judged the same way."""
    from strategies import get_strategy

    monkeypatch.setattr(get_strategy("l2_kd").cls, "tuning_objective", "forgetting")
    data = {**MATRIX, "strategies": {"l2_kd": {}}}
    store = tmp_path / "store"
    assert main(["tune", write_matrix(tmp_path, data), "--trials", "3", "--out", str(store),
                 "--seed", "2"]) == 0
    trials = rows(store)
    assert {r["objective"] for r in trials} == {"forgetting"}
    values = []
    for r in trials:
        payload = json.loads((store / "cells" / f"synth-tiny__{r['label']}__seed0"
                              / "result.json").read_text())["payload"]
        values.append(cell_objective(payload, "forgetting", ("recall", "1")))
        assert float(r["mean"]) == pytest.approx(values[-1], abs=1e-6)  # the CSV's 6 digits
    assert len(set(values)) > 1  # else the choice would only show the tie rule
    best = min(range(len(values)), key=lambda i: (values[i], i))
    assert [r["chosen"] for r in trials] == [str(i == best) for i in range(len(trials))]
