"""docs/errors.md, row by row: the real CLI in its own process, exit 2, one line, store intact."""

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
    # the matrix file itself (bounded before it is parsed or expanded)
    "matrix-not-utf8": (lambda t, s: ["run", _raw_matrix(t, b"name: caf\xe9\n"), "--out",
                                      str(s)], "line 1: not UTF-8 text (byte 0xe9)"),
    "matrix-too-deep": (lambda t, s: ["run", _raw_matrix(
        t, b"name: x\nseeds: " + b"[" * 5000 + b"]" * 5000 + b"\n"), "--out", str(s)],
        "nested deeper than 64 levels"),
    "alias-bomb": (lambda t, s: ["run", _raw_matrix(t, _alias_bomb()), "--out", str(s)],
                   "more than 100,000 values once its aliases are expanded"),
    "matrix-too-large": (lambda t, s: ["run", _raw_matrix(
        t, (Path(matrix(t)).read_text() + "#" * 1_000_000 + "\n").encode()), "--out", str(s)],
        "more than a matrix file may hold (1,000,000)"),
    "set-blamed": (lambda t, s: ["run", matrix(t), "--out", str(s), "--set", "training.p=many"],
                   "--set 'training.p=many': training.p: Input should be a valid integer"),
    # values checked when the matrix is loaded
    "order-negative": (lambda t, s: ["run", _scenario(t, order=-1), "--out", str(s)],
                       "scenarios.0.order: Input should be greater than or equal to 0"),
    "schedule-huge": (lambda t, s: ["run", _scenario(t, schedule="99999999999999x1"), "--out",
                                    str(s)], "more than 10,000 experiences"),
    "scenario-field": (lambda t, s: ["run", _scenario(t, schedule=12), "--out", str(s)],
                       "scenarios.0.schedule: Input should be a valid string or a valid list"),
    "bool-for-int": (lambda t, s: ["run", matrix(t, **{"training.iterations": True}), "--out",
                                   str(s)], "training.iterations: Value error, give a number"),
    "seed-out-of-range": (lambda t, s: ["run", matrix(t, seeds=[-1]), "--out", str(s)],
                          "seeds.0: Input should be greater than or equal to 0"),
    "epochs-inf": (lambda t, s: ["run", matrix(t, **{"training.epochs": float("inf")}),
                                 "--out", str(s)], "training.epochs"),
    "dim-huge": (lambda t, s: ["run", matrix(t, **{"model.dim": 10**9}), "--out", str(s)],
                 "model.dim: Input should be less than or equal to 65536"),
    "device-unknown": (lambda t, s: ["run", matrix(t, **{"training.device": "gpu"}), "--out",
                                     str(s)], "unknown device 'gpu'; use cpu, cuda, cuda:N"),
    "training-not-mapping": (lambda t, s: ["run", matrix(t, **{
        "strategies.finetune": {"training": 0}}), "--out", str(s)],
        "strategies.finetune.training: give training overrides as a mapping"),
    # checked before training (benchmarks.run.preflight)
    "dataset-kwarg-unknown": (lambda t, s: ["run", _scenario(t, dataset_kwargs={
        "num_clases": 12}), "--out", str(t / "new")],
        "takes no argument 'num_clases'. Did you mean 'num_classes'?"),
    "dataset-kwarg-type": (lambda t, s: ["run", _scenario(t, dataset_kwargs={
        "num_classes": "many"}), "--out", str(t / "new")],
        "dataset_kwargs.num_classes: Input should be a valid integer"),
    "device-absent": (lambda t, s: ["run", matrix(t, **{"training.device": "cuda:99"}),
                                    "--out", str(t / "new")], "training.device 'cuda:99': this "
                      "host has"),
    "cache-dir-unusable": (lambda t, s: ["run", matrix(t, **{"cache.dir": str(
        s / "matrix.yaml" / "cache")}), "--out", str(t / "new")], "cannot be written"),
    "k-too-large": (lambda t, s: ["run", matrix(t, **{"training.k": 11}), "--out",
                                  str(t / "new")],
                    "has 10 train images, fewer than K = 11 images per class in a batch"),
    "singleton-test-class": (lambda t, s: ["run", _scenario(t, dataset_kwargs={
        **SMOKE["scenarios"][0]["dataset_kwargs"], "test_per_class": 1}), "--out",
        str(t / "new")], "has a single test image"),
    "one-class-experience": (lambda t, s: ["run", _scenario(t, schedule="1+11"), "--out",
                                           str(t / "new")],
                             "give every experience at least 2 classes in the schedule"),
    # data files
    "index-not-utf8": (lambda t, s: ["data", "info", "cub200", "--root", _cub_edit(
        t, "images.txt", lambda b: b.replace(b"Bird_3_0000", b"Bird_\xff_0000"))],
        "images.txt is not UTF-8 text"),
    "label-not-numeric": (lambda t, s: ["data", "info", "cub200", "--root", _cub_edit(
        t, "image_class_labels.txt", lambda b: b.replace(b"1 3\n", b"1 three\n", 1))],
        "image_class_labels.txt gives the class id 'three' for image id 1"),
    "decompression-bomb": (lambda t, s: ["data", "check", "cub200", "--root", _cub_bomb(t)],
                           "1 of 12 images of cub200 cannot be decoded"),
    # a damaged store: which file, what to do
    "result-not-object": (lambda t, s: ["report", _damage(s, lambda r: []), "--out",
                                        str(t / "new")], "a JSON list instead of an object"),
    "result-no-payload": (lambda t, s: ["report", _damage(s, lambda r: {
        k: v for k, v in r.items() if k != "payload"}), "--out", str(t / "new")],
        "a finished cell without its payload"),
    "summary-wrong-type": (lambda t, s: ["report", _damage(s, lambda r: _set(
        r, "summary", [1])), "--out", str(t / "new")],
        "payload.summary is of the wrong type"),
    "r-matrix-ragged": (lambda t, s: ["report", _damage(s, lambda r: _set(
        r, "r_matrix", {"recall": {"1": [[0.5], [0.5, 0.5], [0.5, 0.5, 0.5]]}})), "--out",
        str(t / "new")], "the R matrix of recall@1 is ragged"),
    "report-out-unwritable": (lambda t, s: ["report", str(s), "--out", str(
        s / "matrix.yaml" / "report")], "cannot write the report to"),
    "lock-folder": (lambda t, s: ["run", matrix(t), "--out", _lock_folder(s), "--resume"],
                    "is a folder, not lrbench's lock file; remove it and run again"),
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
    # rehearsal and statistics-only strategies (issue #31)
    "buffer-zero": (lambda t, s: ["run", matrix(t, **{"strategies.der": {"mem_size": 0}}),
                                  "--out", str(t / "new")],
                    "strategy 'der': hyperparameter 'mem_size': Input should be greater than "
                    "or equal to 1"),
    "buffer-too-large": (lambda t, s: ["run", matrix(t, strategies={"replay": {
        "mem_size": 100000}}), "--out", str(t / "new")],
        "mem_size 100000 is larger than the data the buffer can have seen (80 train images"),
    "herding-no-buffer": (lambda t, s: ["run", matrix(t, **{"strategies.finetune": {
        "selection": "herding"}}), "--out", str(t / "new")],
        "'selection' is a hyperparameter of der, er_aml, replay, not of 'finetune'"),
    "projection-zero": (lambda t, s: ["run", matrix(t, **{"strategies.ranpac": {
        "proj_dim": 0}}), "--out", str(t / "new")],
        "strategy 'ranpac': hyperparameter 'proj_dim': Input should be greater than or "
        "equal to 1"),
    "projection-huge": (lambda t, s: ["run", matrix(t, **{"strategies.ranpac": {
        "proj_dim": 100000}}), "--out", str(t / "new")],
        "strategy 'ranpac': hyperparameter 'proj_dim': Input should be less than or "
        "equal to 16384"),
    "sdc-on-unknown": (lambda t, s: ["run", matrix(t, **{"strategies.sdc": {
        "sdc_on": "finetun"}}), "--out", str(t / "new")],
        "strategy 'sdc': hyperparameter 'sdc_on': Value error, unknown strategy 'finetun'. "
        "Did you mean 'finetune'?"),
    # Avalanche asserts it in every cell at run time: refused before any training instead
    "ewc-decay-not-online": (lambda t, s: ["run", matrix(t, **{"strategies.ewc": {
        "decay_factor": 0.5}}), "--out", str(t / "new")],
        "strategy 'ewc': hyperparameter 'decay_factor': Value error, decay_factor acts only "
        "in mode 'online'"),
    "sdc-sigma-zero": (lambda t, s: ["run", matrix(t, **{"strategies.sdc": {"sigma": 0}}),
                                     "--out", str(t / "new")],
                       "strategy 'sdc': hyperparameter 'sigma': Input should be greater than 0"),
    "drift-no-embeddings": (lambda t, s: ["run", matrix(t, **{"strategies.ldc": {
        "ldc_on": "slda"}}), "--out", str(t / "new")],
        "strategy 'ldc': hyperparameter 'ldc_on': Value error, strategy 'slda' cannot expose "
        "embeddings for drift compensation"),
    "drift-wraps-drift": (lambda t, s: ["run", matrix(t, **{"strategies.sdc": {
        "sdc_on": "ldc"}}), "--out", str(t / "new")],
        "strategy 'sdc': hyperparameter 'sdc_on': Value error, strategy 'ldc' updates the "
        "stored gallery itself"),
    "trunk-unknown": (lambda t, s: ["run", matrix(t, **{"model.trunk": "resnet19"}), "--out",
                                    str(s)], "Did you mean 'resnet18'?"),
    "timm-weights-no-hash": (lambda t, s: ["run", matrix(t, **{
        "model.trunk": "timm:resnet18", "model.pretrained": "r18.pth"}), "--out", str(s)],
        "PATH#sha256="),
    "weights-offline": (lambda t, s: ["run", _offline(t), "--out", str(t / "new")],
                        "ImageNet weights resnet18-f37072fd.pth (torchvision:ResNet18_Weights."
                        "IMAGENET1K_V1) are not in "),
}

#: the cell the damaged-store cases damage
DAMAGED = "synth-tiny__l2_kd__seed1"


def _raw_matrix(tmp: Path, data: bytes) -> str:
    path = tmp / "matrix.yaml"
    path.write_bytes(data)
    return str(path)


def _alias_bomb() -> bytes:
    """A billion leaves in about 950 bytes: nine levels of nine aliases of the level below."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return ("\n".join(lines) + "\n").encode()


def _scenario(tmp: Path, **fields) -> str:
    """The smoke matrix with its inline scenario's ``fields`` changed."""
    return matrix(tmp, scenarios=[{**SMOKE["scenarios"][0], **fields}])


def _cub_edit(tmp: Path, name: str, edit: Callable[[bytes], bytes]) -> str:
    cub = make_cub(tmp)
    (cub / name).write_bytes(edit((cub / name).read_bytes()))
    return str(cub)


def png_bomb(path: Path, side: int = 20_000) -> None:
    """A valid PNG header claiming ``side`` x ``side`` pixels (more than twice PIL's
    ``MAX_IMAGE_PIXELS``): a few dozen bytes that would decode to 400 megapixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _cub_bomb(tmp: Path) -> str:
    cub = make_cub(tmp)
    png_bomb(cub / "images" / "003.Bird_3" / "Bird_3_0000.jpg")
    return str(cub)


def _set(result: dict, key: str, value) -> dict:
    result["payload"][key] = value
    return result


def _damage(store: Path, edit: Callable[[dict], object]) -> str:
    """Rewrite one cell's result.json of ``store`` through ``edit``."""
    import json

    path = store / "cells" / DAMAGED / "result.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return str(store)


def _lock_folder(store: Path) -> str:
    (store / ".lock").unlink(missing_ok=True)  # the OS lock's file, left by the last run
    (store / ".lock").mkdir()
    return str(store)


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


def _offline(tmp: Path) -> str:
    """A matrix with ImageNet weights on a machine without them and without a network: an
    empty $TORCH_HOME and every download sent to a port nothing listens on (the case's
    environment, read by ``run`` from env.json)."""
    import json

    (tmp / "env.json").write_text(json.dumps({
        "TORCH_HOME": str(tmp / "torch"), "LRBENCH_WEIGHTS_MIRROR": "http://127.0.0.1:1"}))
    return matrix(tmp, **{"model.trunk": "resnet18", "model.pretrained": True})


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
    table = DOC.read_text().split("\n## Hostile input")[0]  # that section: test_hostile.py
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.M)
    assert documented and sorted(documented) == sorted(CASES)


@pytest.fixture(scope="module")
def outcomes(smoke_store, tmp_path_factory, request) -> dict[str, tuple]:
    """Every selected case's CLI run (all of them, unless ``-k`` picks some): case ->
    (process, store, snapshot of the store before, its temporary folder). Each runs in a
    process of its own, forked from one that has imported torch and the other large
    libraries once (tests/cli_forks.py: each case paid about 2 s for them), three at a
    time; a case that changes the environment those libraries see (env.json, packages made
    to fail to import) runs as ``python -m benchmarks`` in a fresh interpreter."""
    from concurrent.futures import ThreadPoolExecutor

    from cli_forks import run_cli_many

    selected = {item.callspec.params["case"] for item in request.session.items
                if item.originalname == "test_bad_input" and hasattr(item, "callspec")}
    prepared = {}
    for case, (build, _) in CASES.items():
        if case not in selected:
            continue
        tmp = tmp_path_factory.mktemp(case)
        store = tmp / "store"
        shutil.copytree(smoke_store, store)
        prepared[case] = (build(tmp, store), store, snapshot(store), tmp)

    def environment(tmp: Path) -> dict[str, str]:
        return {**os.environ, "LRBENCH_DATA": str(tmp / "no-data")}

    def fresh(tmp: Path) -> bool:
        """Whether the case needs a fresh interpreter (its own environment, read from
        env.json, or a package stubbed to fail to import, in without/)."""
        return (tmp / "env.json").is_file() or (tmp / "without").is_dir()

    def run(case: str) -> subprocess.CompletedProcess:
        argv, _, _, tmp = prepared[case]
        env = environment(tmp)
        if (tmp / "env.json").is_file():  # the case's own environment (_offline)
            import json

            env.update(json.loads((tmp / "env.json").read_text()))
        if (tmp / "without").is_dir():  # packages made to fail to import (_without)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(tmp / "without"), *filter(None, [os.environ.get("PYTHONPATH")])])
        return subprocess.run([sys.executable, "-m", "benchmarks", *argv], capture_output=True,
                              text=True, timeout=HANG_S, cwd=tmp, env=env)

    alone = [c for c in prepared if fresh(prepared[c][3])]
    forked = [c for c in prepared if c not in alone]
    with ThreadPoolExecutor(max_workers=1) as pool:  # beside the two forked at a time
        fresh_runs = pool.map(run, alone)
        jobs = [{"argv": [str(a) for a in prepared[c][0]], "cwd": str(prepared[c][3]),
                 "env": environment(prepared[c][3])} for c in forked]
        procs = dict(zip(forked, run_cli_many(jobs, workers=2, timeout=HANG_S), strict=True))
        procs.update(zip(alone, fresh_runs, strict=True))
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
