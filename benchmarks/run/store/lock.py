"""The store's lock: one runner per store, an operating-system lock plus an owner record that keeps
a runner of another host out on a shared disk."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from benchmarks.errors import LrbenchError
from benchmarks.run.store.layout import check_lock_files, read_store_text
from metrics.io import (
    atomic_write,
)

if TYPE_CHECKING:
    pass


def hostname() -> str:
    """This host's name, as the lock records it."""
    return socket.gethostname()


def _owner(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of the recorded holder, or None (no record, or a damaged one)."""
    try:
        pid, host = (read_store_text(path, "lock owner record") or "").split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):  # NotARegularFile is refused before: check_lock_files
        return None


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold ``store`` for this runner; a live holder is a one-line ``LrbenchError``.

    The OS lock decides: once this process holds it, no other runner of this host holds
    the store, so an owner record naming this host is stale (a run killed with ``kill -9``
    whose pid was reused since, a damaged record) and is replaced. Only a record of
    another host, whose runner the OS lock may not reach (a shared disk), keeps it out."""
    store = Path(store)
    owner_file = store / ".lock.owner"
    check_lock_files(store)
    lock = FileLock(store / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:  # (a TimeoutError, so an OSError: caught first)
        held = _owner(owner_file)
        who = f" (pid {held[0]} on {held[1]})" if held else ""
        gone = ""
        if held and held[1] != hostname():  # its pid cannot be checked from this host
            gone = (f"; if host {held[1]!r} is gone for good, delete "
                    f"{str(store / '.lock')!r} and {str(owner_file)!r} and run again")
        raise LrbenchError(f"results store {str(store)!r} is in use by another lrbench run"
                           f"{who}; wait for it to finish or choose another --out{gone}"
                           ) from None
    except OSError as exc:
        raise LrbenchError(f"{str(store / '.lock')!r}: lrbench's lock file cannot be opened "
                           f"({exc.strerror or exc}); remove it and run again") from None
    me = f"{os.getpid()} {hostname()}"
    try:
        held = _owner(owner_file)
        if held is not None:
            pid, host = held
            if host != hostname():
                raise LrbenchError(
                    f"results store {str(store)!r} is held by an lrbench run on host {host!r} "
                    f"(pid {pid}); wait for it to finish, or if that run is dead delete "
                    f"{str(owner_file)!r}, or choose another --out")
            # this host's record, but the OS lock is ours: no runner of this host holds the
            # store (whatever process has that pid now), so the record is stale
        atomic_write(owner_file, me + "\n")  # a stale or damaged record: replaced
        try:
            yield
        finally:
            if _owner(owner_file) == (os.getpid(), hostname()):
                with suppress(OSError):
                    owner_file.unlink()
    finally:
        lock.release()


def lock_free(store: Path) -> bool:
    """Whether no runner holds ``store``: its OS lock can be taken and no owner record of
    another host is there (a record of this host with the OS lock free is stale)."""
    lock = FileLock(Path(store) / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    held = _owner(Path(store) / ".lock.owner")
    return held is None or held[1] == hostname()
