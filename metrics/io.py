"""The one way lrbench writes a file: atomically.

Every file lrbench writes (results, tables, figures, checkpoints, cache entries) goes
through :func:`atomic_write`, so a reader sees the old file or the new one, never half of
one, whatever kills the writer. It lives on the ground floor (``metrics``), which every
other package may import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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
