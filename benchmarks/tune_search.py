"""How lrbench tune searches: each strategy's seeded samplers (a scrambled Sobol start over the
declared ranges, then TPE) and the edge check that moves a chosen value outward until it is
bracketed."""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from benchmarks.config import (
    parse_config,
)
from benchmarks.errors import LrbenchError


def _distribution(space: Any) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from strategies.registry import Choice, IntRange

    if isinstance(space, Choice):
        return CategoricalDistribution(list(space.options))
    if isinstance(space, IntRange):
        return IntDistribution(space.low, space.high)
    return FloatDistribution(float(space.low), float(space.high), log=space.log)

#: training options every strategy can have searched beside its own hyperparameters
#: (``lrbench tune --also-tune NAME``), with their ranges; a chosen value goes into the
#: strategy's ``training:`` override in tuned.yaml
def training_tunables() -> dict[str, Any]:
    """Name -> range of the training options ``--also-tune`` accepts."""
    from strategies.registry import LogUniform

    return {"trunk_lr_mult": LogUniform(0.01, 1.0), "lr": LogUniform(1e-5, 1e-2)}

#: what the trials of a strategy are, in order: its matrix values, a space-filling start,
#: then Optuna's TPE; ``extend`` trials move a best value at an edge outward
KINDS = ("default", "sobol", "tpe", "extend")


def label_seed(seed: int, label: str) -> int:
    """The sampler seed of one strategy's search: derived from ``--seed`` and its label, so
    every strategy gets its own space-filling points and TPE draws (one seed for all would
    give every strategy the same quantiles of its ranges)."""
    digest = hashlib.sha256(f"{seed}:{label}".encode()).hexdigest()
    return int(digest[:8], 16)


def sobol_points(spaces: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points of a scrambled Sobol sequence over ``spaces`` (name -> range), mapped
    to each range (log ranges uniformly in log space, integers and choices by equal
    strata): a start that covers every range, where random draws leave gaps."""
    from scipy.stats import qmc

    from strategies.registry import Choice, IntRange

    if n <= 0 or not spaces:
        return []
    with warnings.catch_warnings():  # balance needs a power of 2; the first n are still
        warnings.simplefilter("ignore")  # well spread
        u = qmc.Sobol(len(spaces), scramble=True, seed=seed).random(n)
    out = []
    for row in u:
        point: dict[str, Any] = {}
        for x, (name, space) in zip(row, spaces.items(), strict=True):
            if isinstance(space, Choice):
                point[name] = space.options[min(int(x * len(space.options)),
                                                len(space.options) - 1)]
            elif isinstance(space, IntRange):
                point[name] = min(space.low + int(x * (space.high - space.low + 1)), space.high)
            elif space.log:
                point[name] = float(math.exp(math.log(space.low) + x * (
                    math.log(space.high) - math.log(space.low))))
            else:
                point[name] = float(space.low + x * (space.high - space.low))
        out.append(point)
    return out


@dataclass
class Edge:
    """Where one searched value's best lies among the values tried (:func:`edges`)."""

    strategy: str
    param: str
    best: Any
    low: Any
    high: Any
    #: ``low`` / ``high``: the best is the smallest / largest value tried; ``single``: only
    #: one value was tried; None: bracketed
    side: str | None
    #: why it cannot be searched further out (a range that is not continuous, a Config
    #: bound), or None
    stuck: str | None = None

    def line(self) -> str:
        """One line on what the search showed for this value."""
        name = f"{self.strategy} {self.param}"
        if self.side is None:
            return (f"{name}: the best value {self.best:.4g} lies inside the values tried "
                    f"[{self.low:.4g}, {self.high:.4g}] (bracketed)")
        if self.side == "single":
            return f"{name}: only one value ({self.best:.4g}) was tried: nothing is bracketed"
        which = "smallest" if self.side == "low" else "largest"
        text = (f"{name}: the best value {self.best:.4g} is the {which} value tried "
                f"([{self.low:.4g}, {self.high:.4g}]): the optimum may lie beyond it")
        return text + (f"; {self.stuck}" if self.stuck else
                       "; rerun with --extend-edges 10 to search further out")


def edges(trials: list[Trial], label: str, spaces: dict[str, Any],
          direction: str) -> list[Edge]:
    """For each continuous searched value of strategy ``label``: is its best trial's value
    strictly inside the values its finished trials tried, or at their smallest / largest?
    (Choices have no edge and are left out; an integer range counts like a real one.)"""
    from strategies.registry import Choice

    ok = [t for t in trials if t.strategy == label and t.status == "finished"]
    if len(ok) < 1:
        return []
    best = _best(ok, direction)
    out = []
    for name, space in spaces.items():
        if isinstance(space, Choice):
            continue
        tried = sorted({float(t.params[name]) for t in ok if name in t.params})
        value = float(best.params[name])
        side = None
        if len(tried) < 2:
            side = "single"
        elif value <= tried[0]:
            side = "low"
        elif value >= tried[-1]:
            side = "high"
        out.append(Edge(label, name, value, tried[0], tried[-1], side))
    return out


def _best(trials: list[Trial], direction: str) -> Trial:
    sign = 1.0 if direction == "maximize" else -1.0
    return max(trials, key=lambda t: (sign * t.mean, -t.number))


def extended_value(space: Any, value: float, side: str, factor: float) -> float | None:
    """``value`` moved outward past the edge ``side`` by ``factor``: a log range's value
    times or divided by ``factor``, a linear range's by ``factor - 1`` of its declared
    width; None for an integer range (not extended)."""
    from strategies.registry import IntRange

    if isinstance(space, IntRange):
        return None
    if space.log:
        return value * factor if side == "high" else value / factor
    step = (factor - 1) * (space.high - space.low)
    return value + step if side == "high" else value - step


def accepting(tuning: dict[str, Any], name: str, source: str, plan: Any,
              params: dict[str, Any], param: str) -> Any:
    """Whether the strategy's Config takes ``params`` with ``param`` at a given value, in
    the tuning's matrix (what :func:`extension` asks of a value: its own bound refuses)."""
    def ok(value: float) -> bool:
        try:
            parse_config({**tuning, "name": name, "strategies": {
                "probe": plan.variant({**params, param: value})}}, source)
        except LrbenchError:
            return False
        return True
    return ok


def extension(space: Any, value: float, side: str, factor: float,
              valid: Any = lambda v: True) -> float | None:
    """Where to search past an edge: :func:`extended_value`, or, where the strategy's
    Config refuses that (``valid`` says), the declared range's own end on that side when
    it lies beyond ``value`` (a shrinkage chosen at 0.65 of a range ending at 1: 2.6 is
    refused, 1 is tried); None when neither is a value further out."""
    out = extended_value(space, value, side, factor)
    if out is None or valid(out):
        return out
    end = space.high if side == "high" else space.low
    beyond = end > value if side == "high" else end < value
    return end if beyond and valid(end) else None


#: objective name -> (Optuna direction, what it is); each is computed per cell from the
#: chosen metric's union-of-seen curve or R matrix, on the validation split
OBJECTIVES = {
    "final_seen": ("maximize", "final value on the union of seen classes' validation images"),
    "avg_incremental_seen": ("maximize", "mean over the stream of the union-of-seen value"),
    "final_mean": ("maximize", "final mean over tasks of the per-task value"),
    "forgetting": ("minimize", "mean forgetting of the per-task value"),
    "final_nri": ("maximize", "final value on the never-re-indexed gallery of the seen "
                  "classes' validation images, each embedded once by the model of its "
                  "arrival"),
}


@dataclass
class Trial:
    """One trial of one strategy: its label, searched values and objective over seeds."""

    strategy: str
    number: int
    label: str
    params: dict[str, Any]
    per_seed: dict[int, float] = field(default_factory=dict)
    status: str = "finished"
    mean: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    chosen: bool = False
    #: how its values were drawn (:data:`KINDS`)
    kind: str = "default"
    #: why a failed trial failed: its first cell that did not give a value, and the
    #: reason the store recorded (empty for a finished trial)
    reason: str = ""


def _with_validation(data: dict[str, Any], validation: float | None, source: str
                     ) -> dict[str, Any]:
    """The raw matrix with every scenario evaluated on a validation split: ``validation``
    added where a scenario lacks one, or a one-line refusal when it is not given."""
    data = copy.deepcopy(data)
    config = parse_config(data, source, registries=False)
    scenarios = []
    for raw, sc in zip(data.get("scenarios") or [], config.scenarios, strict=True):
        if sc.validation is None:
            if validation is None:
                raise LrbenchError(
                    f"{source}: scenario {sc.name!r} has no validation split, and tune never "
                    "evaluates on the test split; add 'validation: 0.2' to it, or pass "
                    "--validation 0.2")
            raw = {"protocol": raw, "validation": validation} if isinstance(raw, str) \
                else {**raw, "validation": validation}
        scenarios.append(raw)
    data["scenarios"] = scenarios
    return data


def _without_validation(data: dict[str, Any]) -> dict[str, Any]:
    """The raw matrix with every scenario's ``validation`` removed (the test run)."""
    data = copy.deepcopy(data)
    data["scenarios"] = [{k: v for k, v in sc.items() if k != "validation"}
                         if isinstance(sc, dict) else sc for sc in data.get("scenarios") or []]
    return data
