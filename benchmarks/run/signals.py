"""Ctrl-C and SIGTERM inside a cell: noted, so a cell ended by a signal is told from one that
raised KeyboardInterrupt itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: set by :func:`note_signals`' handlers when this process receives SIGINT or SIGTERM
_SIGNALLED: list[int] = []


def interrupted() -> bool:
    """Whether this process received SIGINT or SIGTERM while :func:`note_signals` held: a
    ``KeyboardInterrupt`` then stops the run; without a signal it is a cell's failure."""
    return bool(_SIGNALLED)


@contextmanager
def note_signals() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM are noted (:func:`interrupted`) before their
    handler runs as before (``KeyboardInterrupt``, the CLI's ``Terminated``). Only in the
    main thread (where Python runs signal handlers); elsewhere a no-op."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(signum)
        if not callable(before):  # the default action (end the process) or ignored
            continue

        def handler(num: int, frame: Any, before: Callable[..., Any] = before) -> None:
            _SIGNALLED.append(num)
            before(num, frame)

        saved[signum] = before
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in saved.items():
            signal.signal(signum, before)
        _SIGNALLED.clear()
