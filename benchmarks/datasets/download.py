"""Downloading official archives with checksums, failing with one clear line."""

from __future__ import annotations

from pathlib import Path

from benchmarks.errors import LrbenchError


def fetch_archive(name: str, url: str, md5: str, dest: Path, layout: str) -> None:
    """Download ``url`` into ``dest``, verify its MD5 and extract it there.

    Any network or checksum failure becomes a one-line :class:`LrbenchError` naming the URL
    and the layout to reproduce by hand (this machine's network may reach no dataset host).
    """
    from torchvision.datasets.utils import download_and_extract_archive

    dest.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(url, download_root=str(dest), md5=md5)
    except Exception as exc:  # network, HTTP, checksum or archive errors alike
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise LrbenchError(
            f"{name}: download of {url} failed ({reason}); fetch it by hand into "
            f"{str(dest)!r} and lay it out as: {layout}"
        ) from None


def torchvision_download(name: str, make: object, url: str, layout: str) -> None:
    """Run a torchvision dataset constructor with ``download=True`` under the same errors."""
    try:
        make()  # type: ignore[operator]
    except LrbenchError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise LrbenchError(
            f"{name}: download failed ({reason}); get the files from {url} and lay them out "
            f"as: {layout}"
        ) from None
