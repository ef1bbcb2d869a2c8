"""User-facing errors: one line that names the problem and the fix.

The CLI turns every :class:`LrbenchError` into that line on stderr and exit code 2, with no
traceback. Library code raises it for anything a user can fix (a wrong path, a bad schedule,
an unknown name); genuine bugs stay ordinary exceptions so their tracebacks are kept.
The class itself lives in :mod:`metrics.errors` (the ground floor, which ``strategies`` may
import too: ``strategies.StrategyError`` derives from it); this module re-exports it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from metrics.errors import LrbenchError, abridged

__all__ = ["LrbenchError", "abridged", "closest", "unknown_name"]


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> LrbenchError:
    """Build the error for an unknown dataset/protocol/strategy name, suggesting the closest."""
    choices = sorted(choices)
    return LrbenchError(
        f"unknown {kind} {name!r}.{closest(name, choices)} Known: {', '.join(choices)}."
    )


