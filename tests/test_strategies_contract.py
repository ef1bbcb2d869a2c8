"""Every registered strategy passes the contract kit (`pytest -k contract`)."""

from __future__ import annotations

import pytest

from benchmarks.config import first_loop_target
from benchmarks.contract import check_strategy
from strategies import available_strategies, get_strategy

#: smaller budgets where a default is sized for real runs (the kit must take seconds)
KIT_HPARAMS = {"dkd": {"n_synth": 16, "synth_steps": 5},
               "ranpac": {"proj_dim": 256}, "ranpac_fs": {"proj_dim": 256}}


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_contract(name, tmp_path):
    report = check_strategy(name, KIT_HPARAMS.get(name), tmp_path=tmp_path)
    assert "checkpoint + resume identical" in report.checks
    # every name declared inactive in the first experience is proven so (the runner
    # shares that experience between cells that differ in them)
    idle = sorted(get_strategy(name).inactive_in_first_experience)
    if idle:
        assert f"first experience unchanged by {', '.join(idle)}" in report.checks
    # a strategy that trains as another (drift compensation) is proven to, bit for bit (the
    # runner shares the training loops between such cells)
    spec = get_strategy(name)
    as_name, _ = spec.cls.trains_as(name, spec.config_cls().resolved())
    shared = [c for c in report.checks if c.startswith("trains as ")]
    assert shared == ([f"trains as {as_name}: its shared training loops give the same bits"]
                      if as_name != name else [])
    # one whose first loop is another's (finetune's) is proven so, both ways
    target = first_loop_target(as_name)
    crossed = [c for c in report.checks if c.startswith("first loop as ")]
    assert crossed == ([f"first loop as {target}'s: shared both ways, the same bits"]
                       if target not in (None, name) else [])


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_every_accepted_hyperparameter_value_builds_the_plugin(name):
    """A value the Config accepts must not fail later, when each cell builds its plugin
    (ewc's decay_factor without mode online once passed validation, then failed every
    cell in Avalanche's constructor): each hyperparameter at up to 6 other values."""
    from benchmarks.contract import other_values
    from strategies import make_plugin
    from strategies.registry import StrategyError, make_config

    spec = get_strategy(name)
    tried = 0
    for hp in spec.config_cls.model_fields:
        for value in other_values(spec, hp, {}, most=6):
            try:
                make_config(name, {hp: value})
            except StrategyError:
                continue
            make_plugin(name, {hp: value})
            tried += 1
    assert tried or not spec.config_cls.model_fields


def test_contract_with_a_timm_trunk(tmp_path):
    """``model.trunk: timm:test_resnet`` (timm's 0.4M-parameter ResNet made for tests,
    randomly initialised, 32 px images) passes the kit: any timm trunk goes through the
    same code (tests/test_model.py builds resnet18 and inception_v3 in it)."""
    pytest.importorskip("timm")
    report = check_strategy("l2_kd", trunk="timm:test_resnet", tmp_path=tmp_path)
    assert "checkpoint + resume identical" in report.checks
    assert any(c.startswith("regulariser active") for c in report.checks)
    assert report.checks[-1] == "timm:test_resnet embeds a 224 px image in 512 dimensions"


@pytest.mark.slow  # minutes on two cores: BN-Inception's 11M parameters, 3 runs of 3 tasks
def test_contract_with_the_thesis_backbone(tmp_path):
    """``lrbench check finetune --trunk bninception``: randomly initialised (no network
    here), it passes the kit and embeds a 224 px image in 512 dimensions."""
    report = check_strategy("finetune", trunk="bninception", tmp_path=tmp_path)
    assert report.checks[-1] == "bninception embeds a 224 px image in 512 dimensions"


@pytest.mark.parametrize(("name", "wrong"), [("lwf", "ce_weight"), ("replay", "mem_size"),
                                             ("mmd_kd", "ce_weight")])
def test_a_wrong_first_experience_declaration_fails_the_kit(name, wrong, tmp_path,
                                                           monkeypatch):
    """Declaring a hyperparameter that does act in the first experience (the CE weight
    trains the classifier from the start; the memory is filled after it) is caught, naming
    it."""
    cls = get_strategy(name).cls
    monkeypatch.setattr(cls, "inactive_in_first_experience",
                        cls.inactive_in_first_experience | {wrong})
    with pytest.raises(AssertionError, match=f"{wrong}=.*changes the state after the first"):
        check_strategy(name, tmp_path=tmp_path)


@pytest.mark.parametrize("name", ["der", "lwf", "bct"])
def test_a_wrong_first_loop_declaration_fails_the_kit(name, tmp_path, monkeypatch):
    """Declaring finetune's first loop for a strategy whose first loop differs (der replays
    its reservoir from the second step; lwf and bct train a classifier from the start, so
    finetune's file does not even fit their model) is caught, naming the declaration."""
    monkeypatch.setattr(get_strategy(name).cls, "first_loop_as", "finetune")
    with pytest.raises(AssertionError, match=f"{name} declares first_loop_as = 'finetune'"):
        check_strategy(name, tmp_path=tmp_path)


def test_a_first_loop_declaration_must_hold_at_every_hyperparameter_value(tmp_path,
                                                                         monkeypatch):
    """The first loop's key ignores every hyperparameter, so the kit tries each at other
    values: a term that acts in the first loop only when its weight is set passes at the
    default (0) and is caught at the next value, naming it; and a subclass inherits no
    such declaration (what it adds may act there)."""
    from pydantic import Field

    from strategies import registry
    from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin

    class Jitter(StrategyPlugin, Callbacks):
        """Fine-tuning plus, when ``jitter`` > 0, a term from the first step on."""

        first_loop_as = "finetune"

        class Config(StrategyConfig):
            jitter: float = Field(0.0, ge=0)

        def before_backward(self, strategy, **kwargs):
            if self.config.jitter:
                strategy.add_loss("jitter",
                                  self.config.jitter * strategy.mb_output.pow(2).mean())

    class Child(Jitter):
        """Inherits the declaration, not the claim."""

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_strategy("jitter-test")(Jitter)
    registry.register_strategy("jitter-child")(Child)
    assert first_loop_target("jitter-test") == "finetune"
    assert first_loop_target("jitter-child") is None
    with pytest.raises(AssertionError, match=r"jitter=0\.5 its first training loop differs "
                       r"from finetune's .*declares first_loop_as = 'finetune'"):
        check_strategy("jitter-test", tmp_path=tmp_path)


def test_an_unknown_first_loop_target_is_one_line(monkeypatch):
    from strategies.registry import StrategyError

    monkeypatch.setattr(get_strategy("ewc").cls, "first_loop_as", "fintune")
    with pytest.raises(StrategyError, match="strategy 'ewc' declares first_loop_as = "
                       "'fintune', not a registered strategy"):
        first_loop_target("ewc")


def test_an_unknown_first_experience_name_is_refused_at_registration():
    from strategies.registry import StrategyPlugin, register_strategy

    class Bad(StrategyPlugin):
        inactive_in_first_experience = frozenset({"nope"})

    with pytest.raises(TypeError, match="nope, not hyperparameters of its Config"):
        register_strategy("bad-first")(Bad)


def test_first_difference_compares_bit_for_bit():
    """The kit's state comparison: identical states give None; a key, a length, one bit
    of a tensor (even -0.0 against 0.0) or of an array, or a value differing is named."""
    import numpy as np
    import torch

    from benchmarks.contract import first_difference

    state = {"model": {"w": torch.tensor([0.0, 1.5])}, "rng": (np.arange(3), 7),
             "losses": [{"total": float("nan")}], "done": 1}
    same = {"model": {"w": torch.tensor([0.0, 1.5])}, "rng": (np.arange(3), 7),
            "losses": [{"total": float("nan")}], "done": 1}
    assert first_difference(state, same) is None
    cases = [
        ({**same, "model": {"w": torch.tensor([-0.0, 1.5])}}, "state['model']['w']"),
        ({**same, "model": {"v": torch.tensor([0.0, 1.5])}}, "state['model']: keys"),
        ({**same, "rng": (np.array([0, 1, 3]), 7)}, "state['rng'][0]: arrays differ"),
        ({**same, "rng": (np.arange(3),)}, "state['rng']: length 2 != 1"),
        ({**same, "done": 2}, "state['done']: 1 != 2"),
        ({**same, "done": 1.0}, "state['done']: 1 != 1.0"),
    ]
    for other, where in cases:
        assert (first_difference(state, other) or "").startswith(where), where


def test_names_that_act_only_together_fail_the_kit(monkeypatch):
    """Two weights, each harmless alone, that skip work in the first experience only when
    both are zero (and so draw fewer random numbers): the kit's all-at-once run catches
    the declaration that the one-at-a-time runs pass."""
    import torch
    from pydantic import Field

    from strategies import registry
    from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_strategy("both_zero")
    class BothZero(StrategyPlugin, Callbacks):
        """Draws a random number in every experience unless both weights are zero."""

        class Config(StrategyConfig):
            a: float = Field(1.0, ge=0)
            b: float = Field(1.0, ge=0)

        inactive_in_first_experience = frozenset({"a", "b"})

        def before_training_exp(self, strategy, **kwargs):
            if self.config.a or self.config.b:
                torch.rand(1)

    with pytest.raises(AssertionError, match=r"a=0.0, b=0.0 .*declares them"):
        check_strategy("both_zero")
