"""W&B tracking (benchmarks.run.wandb_tracking) in W&B's offline mode: each cell's run is
written under WANDB_DIR, read back from its .wandb file, and holds the store's values."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, SMOKE_FAST

pytest.importorskip("wandb")


def records(path: Path) -> Iterator[object]:
    """The protobuf records of a W&B run file (``run-<id>.wandb``: W&B's LevelDB-style log,
    a 7-byte file header, then 32 KiB blocks of records split into chunks with a 7-byte
    header: CRC, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _key(item: object) -> str:
    return item.key or ".".join(item.nested_key)


def read_run(path: Path) -> dict:
    """name, group, config, history rows (step -> values) and summary of a run file."""
    out: dict = {"history": {}, "summary": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["group"] = r.run.display_name, r.run.run_group
            out["config"] = {_key(i): json.loads(i.value_json) for i in r.run.config.update}
            out["tags"] = list(r.run.tags)
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            out["history"][row.pop("_step")] = {k: v for k, v in row.items()
                                                if not k.startswith("_")}
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in r.summary.update
                                   if not _key(i).startswith("_")})
    return out


def test_offline_runs_hold_the_store_values(tmp_path, monkeypatch):
    from benchmarks.config import load_config
    from benchmarks.run.store import read_result
    from benchmarks.run.wandb_tracking import history
    from benchmarks.runner import run_matrix

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "configs" / "smoke.yaml",
                         [*SMOKE_FAST, "tracking.wandb=true", "tracking.wandb_project=p"])
    store = tmp_path / "store"
    assert run_matrix(config, store, progress=False)["finished"] == 4
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    runs = {run["name"]: run for run in map(read_run, files)}
    assert len(files) == 4 and len(runs) == 4
    for path in store.glob("cells/*/result.json"):
        result = read_result(path)
        run = runs[result["id"]]
        assert run["history"] == history(result)  # every metric, every step: the store's
        last = history(result)[max(history(result))]
        assert {k: v for k, v in run["summary"].items() if k.startswith("summary.")} == {
            k: v for k, v in last.items() if k.startswith("summary.")}
        assert run["summary"]["status"] == "finished"
        assert run["config"]["config_hash"] == result["config_hash"]
        assert run["config"]["training"]["iterations"] == 3
        assert run["group"].startswith("smoke-") and result["config"]["strategy"] in run["tags"]
    # a rerun logs nothing again (the store remembers what was logged)
    assert run_matrix(config, store, progress=False)["skipped"] == 4
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 4


def test_online_without_a_login_is_refused_before_training(tmp_path, monkeypatch):
    from benchmarks.config import TrackingSpec
    from benchmarks.errors import LrbenchError
    from benchmarks.run.tracking import open_tracker

    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no W&B settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    with pytest.raises(LrbenchError, match="W&B tracking needs a login: run 'wandb login'"):
        open_tracker(TrackingSpec(wandb=True), tmp_path / "s", "m")
    assert open_tracker(TrackingSpec(), tmp_path / "s", "m") is None


def test_wandb_flag_sets_the_tracking_option():
    from benchmarks.cli import build_parser, run_overrides

    args = build_parser().parse_args(["run", "m.yaml", "--wandb"])
    assert "tracking.wandb=true" in run_overrides(args)
