"""What every ``lrbench`` command shares: the one-line usage error (exit 2) and argument types."""

from __future__ import annotations

import argparse
import math
import os
import warnings
from typing import Any, NoReturn

EXIT_USAGE = 2

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (problem + where to look), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

def quiet_third_party() -> None:
    # Avalanche imports qpsolvers, which warns on stderr that no QP solver is installed
    # (only GEM needs one); keep stderr for our own messages.
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

def root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=os.environ.get("LRBENCH_DATA"),
                   help="dataset root, or a folder holding several datasets "
                        "(default: $LRBENCH_DATA)")

def at_least(low: int) -> Any:
    """An argparse type: an integer >= ``low`` (a bad value is argparse's one-line error,
    naming the flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"give an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"give an integer >= {low}, got {value}")
        return value

    return parse

def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"give a number > 0, got {text!r}")
    return value

def seed_list(text: str) -> list[int]:
    """An argparse type: comma-separated seeds, each in 0..2**32 - 1."""
    from benchmarks.config import SEED_MAX

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give seeds as S,S,..., got {text!r}") from None
    if not seeds or any(not 0 <= s <= SEED_MAX for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give distinct seeds in 0..{SEED_MAX}, got {text!r}")
    return seeds

def seed_value(text: str) -> int:
    """An argparse type: one seed in 0..2**32 - 1 (NumPy's seed range)."""
    from benchmarks.config import SEED_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give an integer, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"give a seed in 0..{SEED_MAX}, got {value}")
    return value
