"""What ``lrbench tune`` may search, declared next to a strategy's Config: uniform, log-uniform,
integer and categorical ranges, and their check against the Config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ValidationError


@dataclass(frozen=True)
class Uniform:
    """A tunable float searched uniformly in [low, high]."""

    low: float
    high: float
    log: ClassVar[bool] = False

    def endpoints(self) -> list[Any]:
        """The values a range's declaration must accept (checked against the Config)."""
        return [self.low, self.high]

    def problem(self) -> str | None:
        """Why this range is not a range (None when it is)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            return f"needs finite low < high, got [{self.low}, {self.high}]"
        return None

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the range."""
        return isinstance(value, int | float) and self.low <= value <= self.high

    def describe(self) -> str:
        """Human-readable, e.g. ``log-uniform [0.1, 100]``."""
        return f"{'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A tunable positive float searched uniformly in log space in [low, high] (weights)."""

    log: ClassVar[bool] = True

    def problem(self) -> str | None:
        if self.low <= 0:
            return f"a log-uniform range needs low > 0, got {self.low}"
        return super().problem()


@dataclass(frozen=True)
class IntRange(Uniform):
    """A tunable integer in [low, high] (inclusive)."""

    low: int
    high: int

    def problem(self) -> str | None:
        if not (isinstance(self.low, int) and isinstance(self.high, int)):
            return f"an integer range needs integer bounds, got [{self.low}, {self.high}]"
        return super().problem()

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"integer [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """A tunable taking one of a few listed values (e.g. a switch)."""

    options: tuple[Any, ...]

    def endpoints(self) -> list[Any]:
        return list(self.options)

    def problem(self) -> str | None:
        if len(self.options) < 2 or len(set(map(repr, self.options))) != len(self.options):
            return f"a choice needs at least two distinct options, got {self.options!r}"
        return None

    def contains(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))

#: what a strategy's ``tunable`` declares for one hyperparameter
Tunable = Uniform | Choice


def tunable_problems(cls: type) -> list[str]:
    """Everything wrong with a plugin class's ``tunable`` declaration (empty when valid):
    each name is a hyperparameter of its ``Config``, each range a range, both ends (every
    option) accepted by the ``Config``, and the default inside the range."""
    config = cls.Config
    out = []
    for name, space in getattr(cls, "tunable", {}).items():
        if name not in config.model_fields:
            out.append(f"{name!r} is not a hyperparameter of its Config")
            continue
        if not isinstance(space, Uniform | Choice):
            out.append(f"{name!r}: {space!r} is not a Uniform, LogUniform, IntRange or Choice")
            continue
        problem = space.problem()
        if problem:
            out.append(f"{name!r}: {problem}")
            continue
        for value in space.endpoints():
            try:
                config(**{name: value})
            except ValidationError as exc:
                out.append(f"{name!r}: the Config refuses {value!r} "
                           f"({exc.errors()[0]['msg']})")
        default = config.model_fields[name].default
        if not space.contains(default):
            out.append(f"{name!r}: the default {default!r} is outside {space.describe()}")
    return out
