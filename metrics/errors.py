"""The project's one user-error class, on the ground floor so every package can raise it.

``metrics`` imports nothing of the other packages, so ``strategies`` (which must not import
``benchmarks``) and ``benchmarks`` both take :class:`LrbenchError` from here;
``benchmarks.errors`` re-exports it with the helpers that build messages. The CLI turns
every one into a single line on stderr and exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class LrbenchError(ValueError):
    """A problem in the user's input, with the fix in the message (always one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def abridged(items: Sequence[str], most: int = 5, sep: str = ", ") -> str:
    """The first ``most`` items joined, then "and N more": a long list in a one-line message."""
    rest = len(items) - most
    return sep.join(items[:most]) + (f" and {rest} more" if rest > 0 else "")


def short_repr(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters, without building the whole text of a
    large value first (``reprlib``: a few items of each level)."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlevel = width, width, 3
    text = short.repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
