"""docs/errors.md, row by row: the real CLI in a subprocess, exit 2, one line, store intact."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, truncate
from test_datasets import make_cub

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def matrix(tmp: Path, **changes) -> str:
    data = yaml.safe_load(yaml.safe_dump(SMOKE))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is ...:
            node.pop(last)
        else:
            node[last] = value
    path = tmp / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _cub_without(tmp: Path, name: str) -> str:
    cub = make_cub(tmp)
    (cub / name).unlink()
    return str(cub)


def _cub_truncated(tmp: Path) -> str:
    cub = make_cub(tmp)
    truncate(cub / "images" / "003.Bird_3" / "Bird_3_0000.jpg")
    return str(cub)


def _cub_run_truncated(tmp: Path) -> str:
    return matrix(tmp, data_root=_cub_truncated(tmp), scenarios=[{
        "name": "cub-tiny", "dataset": "cub200", "schedule": "3", "image_size": 32}],
        **{"training.p": 2, "training.k": 2})


def _cub_no_test_in_second_class(tmp: Path) -> str:
    cub = make_cub(tmp)
    split = cub / "train_test_split.txt"
    rows = split.read_text().split("\n")
    split.write_text("\n".join(r[:-1] + "1" if r and 5 <= int(r.split()[0]) <= 8 else r
                               for r in rows))
    return str(cub)


def _yaml_error(tmp: Path) -> str:
    path = tmp / "matrix.yaml"
    path.write_text("name: bad\nseeds: [0, 1]\nscenarios: [synth-ci\nmodel: {}\n")
    return str(path)


# case id -> (argv builder (tmp dir, store) -> argv, a fragment the message must contain)
Case = tuple[Callable[[Path, Path], list[str]], str]
CASES: dict[str, Case] = {
    "root-missing": (lambda t, s: ["data", "info", "cub200", "--root", str(t / "nothing")],
                     "does not exist"),
    "root-wrong": (lambda t, s: ["data", "info", "cub200", "--root", str(t)],
                   "images.txt' is missing"),
    "index-missing": (lambda t, s: ["data", "info", "cub200", "--root",
                                    _cub_without(t, "image_class_labels.txt")],
                      "image_class_labels.txt' is missing"),
    "corrupt-image": (lambda t, s: ["data", "check", "cub200", "--root", _cub_truncated(t)],
                      "Bird_3_0000.jpg"),
    "corrupt-image-run": (lambda t, s: ["run", _cub_run_truncated(t), "--out", str(t / "new")],
                          "1 in cub200 (images/003.Bird_3/Bird_3_0000.jpg)"),
    "schedule-too-big": (lambda t, s: ["stream", "--dataset", "cub200", "--schedule", "2+5",
                                       "--root", str(make_cub(t))], "needs 7 classes"),
    "empty-experience": (lambda t, s: ["stream", "--dataset", "cub200", "--schedule",
                                       "1+1+1", "--root", _cub_no_test_in_second_class(t)],
                         "experience 1 of schedule '1+1+1' on cub200 has no test images"),
    "unknown-strategy": (lambda t, s: ["run", matrix(t, strategies={"finetun": {}}),
                                       "--out", str(t / "new")], "Did you mean 'finetune'?"),
    "unknown-dataset": (lambda t, s: ["data", "info", "cub2000"], "Did you mean 'cub200'?"),
    "unknown-protocol": (lambda t, s: ["stream", "cub-subset-50+5x1"],
                         "Did you mean 'cub-subset-50+5x10'?"),
    "unknown-key": (lambda t, s: ["run", matrix(t, trainig={"p": 4}), "--out", str(s)],
                    "unknown key 'trainig'. Did you mean 'training'?"),
    "wrong-type": (lambda t, s: ["run", matrix(t, **{"training.p": "many"}), "--out", str(s)],
                   "training.p"),
    "k-not-positive": (lambda t, s: ["run", matrix(t, **{"evaluation.ks": [0, 1]}),
                                     "--out", str(s)], "every K must be a positive integer"),
    "lambda-negative": (lambda t, s: ["run", matrix(t, **{"strategies.l2_kd.lam": -1}),
                                      "--out", str(t / "new")], "'lam'"),
    "batch-too-large": (lambda t, s: ["run", matrix(t, **{"training.p": 8}), "--out", str(s)],
                        "fewer than P = 8"),
    "empty-seeds": (lambda t, s: ["run", matrix(t, seeds=[]), "--out", str(s)], "seeds"),
    "other-matrix": (lambda t, s: ["run", matrix(t, **{"training.lr": 0.5}), "--out", str(s)],
                     "holds a different matrix"),
    "out-unusable": (lambda t, s: ["run", matrix(t), "--out", str(s / "matrix.yaml" / "x")],
                     "cannot write to results folder"),
    "out-read-only": (lambda t, s: ["run", matrix(t), "--out", _read_only(t)],
                      "cannot write to results folder"),
    "yaml-syntax": (lambda t, s: ["run", _yaml_error(t), "--out", str(s)], "line 4"),
    "matrix-missing": (lambda t, s: ["run", str(t / "nothing.yaml"), "--out", str(s)],
                       "not found"),
    "bad-format": (lambda t, s: ["report", str(s), "--format", "pdf"], "unknown report format"),
    "name-traversal": (lambda t, s: ["run", matrix(t, **{"scenarios": [{
        **SMOKE["scenarios"][0], "name": "../../victim"}]}), "--out", str(s)],
        "cannot name a folder"),
    "name-dot": (lambda t, s: ["run", matrix(t, name=".."), "--dry-run"],
                 "'..' cannot name a folder"),
    "label-collides": (lambda t, s: ["run", matrix(t, strategies={"finetune__x": {
        "strategy": "finetune"}}), "--out", str(s)], "strategy label 'finetune__x'"),
    "scenario-twice": (lambda t, s: ["run", matrix(t, scenarios=[SMOKE["scenarios"][0]] * 2),
                                     "--out", str(s)], "scenario name synth-tiny appears twice"),
    "seed-twice": (lambda t, s: ["run", matrix(t, seeds=[0, 0]), "--out", str(s)],
                   "seed 0 appears twice"),
    "rerun-before-unknown": (lambda t, s: ["run", matrix(t), "--out", str(t / "new"),
                                           "--rerun-before", "no-such-commit"],
                             "is not a commit of lrbench"),
    "baseline-unknown": (lambda t, s: ["report", str(s), "--baseline", "finetun", "--out",
                                       str(t / "new")], "Did you mean 'finetune'?"),
    "duplicate-key": (lambda t, s: ["run", _duplicate_key(t), "--out", str(s)],
                      "YAML syntax error: the key 'strategies' is given twice"),
    "merge-unlike": (lambda t, s: ["report", str(s), _other_budget(t, s)],
                     "differ in training.iterations"),
    "not-a-store": (lambda t, s: ["report", str(t)], "is not a results store"),
    "tune-no-validation": (lambda t, s: ["tune", matrix(t), "--trials", "1", "--out",
                                         str(t / "tune")], "has no validation split"),
    "claims-unknown-strategy": (lambda t, s: ["report", str(s), "--claims", _claims(
        t, strategies=["fecd"])], "strategy 'fecd' is not in these results"),
    "claims-unknown-metric": (lambda t, s: ["report", str(s), "--claims", _claims(
        t, metric="recall@16")], "metric 'recall@16' is not in these results"),
    "mlflow-missing": (lambda t, s: ["run", matrix(_without(t, "mlflow")), "--track", "--out",
                                     str(t / "new")], "pip install 'lrbench[mlflow]'"),
    "tracking-uri-unusable": (lambda t, s: ["run", matrix(t), "--tracking-uri", "foo://x",
                                            "--out", str(t / "new")],
                              "MLflow tracking URI 'foo://x' is not usable"),
    "tracking-unreachable": (lambda t, s: ["run", matrix(t), "--tracking-uri",
                                           "http://127.0.0.1:1", "--out", str(t / "new")],
                             "'http://127.0.0.1:1' is not usable (API request"),
    "tracking-folder-unwritable": (lambda t, s: ["run", matrix(t), "--tracking-uri",
                                                 str(s / "matrix.yaml" / "mlruns"), "--out",
                                                 str(t / "new")],
                                   "cannot write the MLflow tracking folder"),
    "submitit-missing": (lambda t, s: ["run", matrix(_without(t, "submitit")), "--executor",
                                       "submitit", "--slurm-cluster", "local", "--out",
                                       str(t / "new")], "pip install 'lrbench[slurm]'"),
    "slurm-absent": (lambda t, s: ["run", matrix(t), "--executor", "submitit", "--out",
                                   str(t / "new")], "found no SLURM here"),
    "trunk-unknown": (lambda t, s: ["run", matrix(t, **{"model.trunk": "resnet19"}), "--out",
                                    str(s)], "Did you mean 'resnet18'?"),
    "timm-weights-no-hash": (lambda t, s: ["run", matrix(t, **{
        "model.trunk": "timm:resnet18", "model.pretrained": "r18.pth"}), "--out", str(s)],
        "PATH#sha256="),
}


def _claims(tmp: Path, **changes) -> str:
    claim = {"name": "kd forgets less", "strategies": ["l2_kd"], "versus": "finetune",
             "column": "forgetting", "direction": "lower", **changes}
    path = tmp / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim]}))
    return str(path)


def _without(tmp: Path, package: str) -> Path:
    """Make ``package`` fail to import in the case's subprocess (as if not installed): a
    stand-in that raises ImportError, first on its PYTHONPATH."""
    stub = tmp / "without" / package
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ImportError('{package} is not installed')\n")
    return tmp


def _duplicate_key(tmp: Path) -> str:
    """The smoke matrix with a second ``strategies:`` (the last one would win silently)."""
    path = Path(matrix(tmp))
    path.write_text(path.read_text() + "strategies:\n  finetune: {}\n")
    return str(path)


def _other_budget(tmp: Path, store: Path) -> str:
    """A copy of ``store`` whose cells claim another training budget, for a merge."""
    import json

    other = tmp / "other"
    shutil.copytree(store, other)
    for path in other.glob("cells/*/result.json"):
        res = json.loads(path.read_text())
        res["config"]["training"]["iterations"] += 1
        res["config"]["strategy"] += "-b"
        path.write_text(json.dumps(res))
    return str(other)


def _read_only(tmp: Path) -> str:
    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing: /proc refuses it
        return "/proc/lrbench-store"
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "store")


def test_every_documented_case_is_tested():
    documented = re.findall(r"^\| `([a-z-]+)` \|", DOC.read_text(), flags=re.M)
    assert documented and sorted(documented) == sorted(CASES)


@pytest.fixture(scope="module")
def outcomes(smoke_store, tmp_path_factory) -> dict[str, tuple]:
    """Every case's CLI run, three at a time (each pays Python's and torch's start-up, so
    running them side by side saves most of that wait): case -> (process, store, snapshot
    of the store before, its temporary folder)."""
    from concurrent.futures import ThreadPoolExecutor

    prepared = {}
    for case, (build, _) in CASES.items():
        tmp = tmp_path_factory.mktemp(case)
        store = tmp / "store"
        shutil.copytree(smoke_store, store)
        prepared[case] = (build(tmp, store), store, snapshot(store), tmp)

    def run(case: str) -> subprocess.CompletedProcess:
        argv, _, _, tmp = prepared[case]
        env = {**os.environ, "LRBENCH_DATA": str(tmp / "no-data")}
        if (tmp / "without").is_dir():  # packages made to fail to import (_without)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(tmp / "without"), *filter(None, [os.environ.get("PYTHONPATH")])])
        return subprocess.run([sys.executable, "-m", "benchmarks", *argv], capture_output=True,
                              text=True, timeout=HANG_S, cwd=tmp, env=env)

    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip(prepared, pool.map(run, prepared), strict=True))
    return {case: (procs[case], *prepared[case][1:]) for case in prepared}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, outcomes):
    proc, store, before, tmp = outcomes[case]
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(err) == 1 and err[0].startswith("lrbench: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert CASES[case][1] in err[0], err[0]
    assert snapshot(store) == before
    assert not (tmp / "new").exists()  # a refused matrix leaves no folder behind
