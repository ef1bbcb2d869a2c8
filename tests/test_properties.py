"""Property tests (hypothesis): the config parser, Recall@K and forgetting, on random inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.config import parse_config
from benchmarks.errors import LrbenchError
from metrics import recall_at_k
from metrics.forgetting import forgetting

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | \
    st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
keys = st.sampled_from(["name", "seeds", "scenarios", "model", "training", "strategies",
                        "evaluation", "logging", "cache", "data_root"]) | st.text(max_size=8)
mappings = st.dictionaries(keys, values, max_size=8)


@SETTINGS
@given(mappings)
def test_config_parser_never_crashes(data):
    """Any mapping either parses or is a one-line LrbenchError: never another exception."""
    try:
        parse_config(data, "matrix.yaml")
    except LrbenchError as exc:
        assert "\n" not in str(exc)


@SETTINGS
@given(mappings)
def test_config_parser_survives_a_yaml_round_trip(data):
    text = yaml.safe_dump(data)
    try:
        parse_config(yaml.safe_load(text), "matrix.yaml")
    except LrbenchError as exc:
        assert str(exc)


SMOKE = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
                       .read_text())


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


PATHS = list(_paths(SMOKE))


@SETTINGS
@given(st.sampled_from(PATHS), values)
def test_one_bad_value_in_a_valid_config(path, value):
    """The smoke config with one value replaced: parses, or fails in one line."""
    import copy

    data = copy.deepcopy(SMOKE)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        parse_config(data, "matrix.yaml")
    except LrbenchError as exc:
        assert "\n" not in str(exc) and str(exc)


@SETTINGS
@given(st.integers(2, 40), st.integers(2, 8), st.integers(0, 10_000))
def test_recall_in_unit_interval_and_grows_with_k(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    y = torch.randint(0, max(1, n // 3), (n,), generator=g)
    ks = (1, 2, 3, 5, 8, 50)
    r = recall_at_k(x, y, ks)
    vals = [r[k] for k in ks]
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert all(a <= b + 1e-12 for a, b in zip(vals, vals[1:], strict=False))


@SETTINGS
@given(st.integers(2, 7), st.floats(0, 1), st.integers(0, 10_000))
def test_no_drop_means_no_forgetting(t, diag, seed):
    """A matrix whose tasks never lose their diagonal value has forgetting 0 (BWT >= 0)."""
    rng = np.random.default_rng(seed)
    r = np.full((t, t), np.nan)
    for j in range(t):
        r[j, j] = diag
        r[j + 1:, j] = diag  # no drop after learning
        r[:j, j] = rng.uniform(0, 1, j)  # before learning: anything (not counted)
    f = forgetting(np.nan_to_num(r))
    assert f["forgetting"] == 0.0 and f["bwt"] == 0.0
    assert f["forgetting_ratio"] == 0.0 or diag == 0.0
