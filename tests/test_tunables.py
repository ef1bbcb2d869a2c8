"""Every strategy's declared tunable ranges (``tunable`` next to its Config) are valid."""

from __future__ import annotations

import pytest
from pydantic import Field

from strategies import (
    Choice,
    IntRange,
    LogUniform,
    Uniform,
    available_strategies,
    strategy_modules,
)
from strategies.registry import StrategyConfig, StrategyPlugin, tunable_problems

#: strategies with nothing to tune: the bounds, and replay, whose memory is a stated budget
NOTHING_TO_TUNE = {"finetune", "joint", "replay", "pretrained", "first_session"}


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_declared_ranges_are_valid_for_the_config(name):
    spec = available_strategies()[name]
    assert tunable_problems(spec.cls) == []
    own = spec.cls.__module__ in {f"strategies.{m}" for m in strategy_modules()}
    if own and name not in NOTHING_TO_TUNE:  # the package's strategies, not test plugins
        assert spec.tunables, f"{name} declares no tunable hyperparameter"
    if name in NOTHING_TO_TUNE:
        assert spec.tunables == {}


def test_every_strategy_module_is_covered():
    names = {spec.cls.__module__ for spec in available_strategies().values()}
    assert {f"strategies.{m}" for m in strategy_modules()} <= names


def test_bad_declarations_are_found():
    class Plugin(StrategyPlugin):
        class Config(StrategyConfig):
            lam: float = 1.0
            n: int = 3
            mode: str = "a"

        tunable = {"lam": LogUniform(0.0, 10.0), "nope": Uniform(0, 1), "n": IntRange(5, 9),
                   "mode": Choice(("a",))}

    problems = tunable_problems(Plugin)
    assert len(problems) == 4
    assert "low > 0" in problems[0] and "'nope' is not a hyperparameter" in problems[1]
    assert "default 3 is outside integer [5, 9]" in problems[2]
    assert "at least two distinct options" in problems[3]

    class Refused(StrategyPlugin):
        class Config(StrategyConfig):
            lam: float = Field(1.0, ge=0.5)

        tunable = {"lam": LogUniform(0.1, 10.0)}

    assert tunable_problems(Refused) == [
        "'lam': the Config refuses 0.1 (Input should be greater than or equal to 0.5)"]


def test_list_strategies_shows_the_ranges(capsys):
    import json

    from benchmarks.cli import main

    assert main(["list", "strategies", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["fecd"]["tunable"]["lam"] == "log-uniform [1, 100]"
    assert rows["finetune"]["tunable"] == {}



