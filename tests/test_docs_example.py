"""The README's "Add a strategy" example is real: it registers and passes the contract kit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from benchmarks.contract import check_strategy
from strategies import get_strategy

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "cosine_distill.py"


def _load_example() -> None:
    spec = importlib.util.spec_from_file_location("cosine_distill_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def test_readme_example_is_the_file():
    readme = (EXAMPLE.parents[2] / "README.md").read_text()
    body = EXAMPLE.read_text()
    start = body.index("@register_strategy")
    assert body[start:].strip() in readme


def test_cosine_distill_example_contract(tmp_path):
    _load_example()
    assert get_strategy("cosine_distill").config_cls().lam == 5.0
    report = check_strategy("cosine_distill", tmp_path=tmp_path)
    assert "regulariser active (cosine_distill)" in report.checks
