"""The one way lrbench writes a file (atomically), and the one way it opens a file it did
not choose (only a regular file, of bounded size).

Every file lrbench writes (results, tables, figures, checkpoints, cache entries) goes
through :func:`atomic_write`, so a reader sees the old file or the new one, never half of
one, whatever kills the writer. Every file of a results store, and every YAML file, is read
through :func:`read_regular`: a symbolic link to ``/dev/zero``, a FIFO or a folder in place
of the file is a one-line :class:`NotARegularFile` before anything is read from it, never a
hang or gigabytes of memory. It lives on the ground floor (``metrics``), which every other
package may import.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from metrics.errors import LrbenchError

#: the temporary files of interrupted writes: ``.<name>.<pid>.tmp`` beside their target
TMP_GLOB = ".*.tmp"


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`atomic_write` writes ``path`` first (matches :data:`TMP_GLOB`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | os.PathLike[str],
                 data: str | bytes | Callable[[Path], None]) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file and a rename.

    ``data`` is text (UTF-8), bytes, or a function that writes the temporary file whose path
    it is given (``fig.savefig``, ``torch.save``, a NumPy memmap filled in place); the file
    is then synced and renamed over ``path``. On any error the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        if callable(data):
            data(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        else:
            with open(tmp, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it (a probe file,
    removed at once), before anything is computed for it; ``OSError`` otherwise, for the
    caller to turn into its own one-line message."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
    return folder


class NotARegularFile(LrbenchError):
    """A path that should hold a regular file holds something else (a folder, a FIFO, a
    device, a symbolic link loop) or one larger than its kind of file may be: one line
    naming it and what to do."""


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words (``a folder``, ``a FIFO``...)."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "not a regular file"


def check_regular(path: str | os.PathLike[str], what: str = "file",
                  fix: str = "remove or rename it") -> bool:
    """Whether ``path`` exists, as a regular file (following symbolic links); False when
    nothing is there. Anything else there (a folder, a FIFO, a device, a symbolic link
    loop or to nothing that exists) is a :class:`NotARegularFile` naming it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise NotARegularFile(f"{str(path)!r}: this {what} is a symbolic link to nothing "
                                  f"that exists; {fix}") from None
        return False
    except OSError as exc:  # ELOOP, EACCES, ENOTDIR...
        raise NotARegularFile(f"{str(path)!r}: this {what} cannot be opened "
                              f"({exc.strerror or exc}); {fix}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(f"{str(path)!r}: this {what} is {file_kind(st.st_mode)}, not a "
                              f"regular file; {fix}")
    return True


def read_regular(path: str | os.PathLike[str], limit: int, what: str = "file",
                 fix: str = "remove or rename it") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; a
    :class:`NotARegularFile` for anything else there or a larger file, and
    ``FileNotFoundError`` when nothing is there.

    The file is opened without blocking (a FIFO would wait forever for a writer) and
    checked on the open descriptor (no race between a check and the open), and never more
    than ``limit`` bytes are read (a symbolic link to ``/dev/zero`` is infinite)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        if os.path.islink(path):
            raise NotARegularFile(f"{str(path)!r}: this {what} is a symbolic link to nothing "
                                  f"that exists; {fix}") from None
        raise
    except IsADirectoryError:
        raise NotARegularFile(f"{str(path)!r}: this {what} is a folder, not a regular file; "
                              f"{fix}") from None
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise
        raise NotARegularFile(f"{str(path)!r}: this {what} cannot be opened "
                              f"({exc.strerror or exc}); {fix}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotARegularFile(f"{str(path)!r}: this {what} is {file_kind(st.st_mode)}, "
                              f"not a regular file; {fix}")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise NotARegularFile(f"{str(path)!r}: this {what} holds {st.st_size:,} bytes, "
                                  f"more than one may ({limit:,}); is it the right file?")
        data = fh.read(limit + 1)
    if len(data) > limit:  # grew while read
        raise NotARegularFile(f"{str(path)!r}: this {what} holds more than {limit:,} bytes, "
                              "more than one may; is it the right file?")
    return data


def keep_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` (a file, or whatever is there in its place: a folder, a FIFO, a
    link) to ``<name>.<suffix>``, or ``<name>.<suffix>N`` beside earlier ones, and return
    the new path: kept, and out of every reader's way."""
    aside, n = path.with_name(f"{path.name}.{suffix}"), 1
    while os.path.lexists(aside):  # an earlier one is kept too
        n += 1
        aside = path.with_name(f"{path.name}.{suffix}{n}")
    os.rename(path, aside)
    return aside
