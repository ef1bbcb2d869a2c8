"""Class-incremental schedules (``"100+4x25"``): their syntax and size bounds, checked before
anything is built, and their class counts. Imported by the matrix schema and by the streams
alike, so neither imports the other."""

from __future__ import annotations

import re
from collections.abc import Sequence

from benchmarks.errors import LrbenchError

#: the most experiences a schedule may list, and classes one experience may hold
MAX_EXPERIENCES = 10_000

MAX_CLASSES = 1_000_000


def check_schedule(schedule: str | list[int]) -> str | list[int]:
    """A schedule's syntax and sizes, checked without building anything (its class counts
    are parsed again by :func:`parse_schedule`): a ValueError for a bad
    one, before ``10000000000x1`` could ask for ten billion experiences."""
    if isinstance(schedule, str):
        counts = []
        for term in schedule.replace(" ", "").split("+"):
            m = re.match(r"^(?:(\d+)x)?(\d+)$", term)
            if not m:
                raise ValueError(f"bad schedule {schedule[:40]!r}: write it as B+NxM (e.g. "
                                 "100+4x25), B+C (e.g. 100+100) or a list of class counts")
            counts.append(tuple(int(g[-12:]) if len(g) <= 12 else 10**12
                                for g in (m.group(1) or "1", m.group(2))))
    else:
        counts = [(1, c) for c in schedule]
    if sum(n for n, _ in counts) > MAX_EXPERIENCES:
        raise ValueError(f"schedule {str(schedule)[:40]!r} has more than {MAX_EXPERIENCES:,} "
                         "experiences; give fewer")
    if any(c > MAX_CLASSES for _, c in counts):
        raise ValueError(f"schedule {str(schedule)[:40]!r} has an experience of more than "
                         f"{MAX_CLASSES:,} classes; give fewer")
    if not counts or any(c < 1 or n < 1 for n, c in counts):
        raise ValueError(f"bad schedule {str(schedule)[:40]!r}: every experience needs at "
                         "least one class")
    return schedule


_TERM = re.compile(r"^(?:(\d+)x)?(\d+)$")


def parse_schedule(schedule: str | Sequence[int]) -> list[int]:
    """Turn ``"100+4x25"``, ``"100+100"``, ``"4x25"`` or ``[50, 10, 10]`` into class counts
    (sizes bounded first by :func:`check_schedule`)."""
    if isinstance(schedule, str):
        try:
            check_schedule(schedule)
        except ValueError as exc:
            raise LrbenchError(str(exc)) from None
    if isinstance(schedule, str):
        counts: list[int] = []
        for term in schedule.replace(" ", "").split("+"):
            m = _TERM.match(term)
            if not m:
                raise LrbenchError(
                    f"bad schedule {schedule!r}: write it as B+NxM (e.g. 100+4x25), B+C "
                    "(e.g. 100+100) or a list of class counts"
                )
            counts += [int(m.group(2))] * int(m.group(1) or 1)
    else:
        try:
            counts = [int(c) for c in schedule]
        except (TypeError, ValueError):
            raise LrbenchError(f"bad schedule {schedule!r}: give a list of integers") from None
    if not counts or any(c <= 0 for c in counts):
        raise LrbenchError(
            f"bad schedule {schedule!r}: every experience needs at least one class"
        )
    return counts
