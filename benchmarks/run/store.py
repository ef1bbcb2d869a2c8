"""The results store's files: atomic writes and the lock that keeps a second runner out.

Every file of a store is written through :func:`atomic_write` (a temporary file in the same
folder, flushed to disk, then renamed over the target), so an interrupted run never leaves
half a file. :func:`store_lock` holds the store for one runner:

* an operating-system lock (``filelock``) on ``<store>/.lock`` excludes every other process
  of this host at once, even under a race, and is released by the kernel if the holder
  dies (``kill -9``): a stale lock cannot exist on one host;
* the holder is recorded in ``<store>/.lock.owner`` (``pid host``, written atomically
  while the OS lock is held, so nobody reads it half-written). On a shared disk whose
  file locks do not reach across hosts, that record still keeps a runner of another host
  out: a holder on another host is never taken for stale, since its pid cannot be checked
  from here; the message names the host and the file to delete if that run is dead;
* release removes the owner record only when it is this process's own.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from benchmarks.errors import LrbenchError


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def hostname() -> str:
    """This host's name, as the lock records it."""
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of the recorded holder, or None (no record, or not ours to read)."""
    try:
        pid, host = path.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold ``store`` for this runner; a live holder is a one-line ``LrbenchError``."""
    store = Path(store)
    owner_file = store / ".lock.owner"
    if (store / ".lock").is_dir():
        raise LrbenchError(f"{str(store / '.lock')!r} is a folder, not lrbench's lock file; "
                           "remove it and run again")
    lock = FileLock(store / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        held = _owner(owner_file)
        who = f" (pid {held[0]} on {held[1]})" if held else ""
        raise LrbenchError(f"results store {str(store)!r} is in use by another lrbench run"
                           f"{who}; wait for it to finish or choose another --out") from None
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
            if pid != os.getpid() and _pid_alive(pid):
                raise LrbenchError(
                    f"results store {str(store)!r} is in use by another lrbench run (pid "
                    f"{pid}); wait for it to finish or choose another --out")
        atomic_write(owner_file, me + "\n")  # a dead holder's record on this host: replaced
        try:
            yield
        finally:
            if _owner(owner_file) == (os.getpid(), hostname()):
                with suppress(OSError):
                    owner_file.unlink()
    finally:
        lock.release()


def lock_free(store: Path) -> bool:
    """Whether no runner holds ``store`` (its OS lock can be taken and no owner record)."""
    lock = FileLock(Path(store) / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    return not (Path(store) / ".lock.owner").exists()
