"""Fetch a weights file once into torch's hub cache with ``torch.hub.download_url_to_file``.

torch.hub streams to a partial file, checks the SHA-256 prefix and moves the file into place;
what it leaves to us, and why this module still exists:

- the offline message, naming the file to download and where to save it;
- checking a *cached* file on every load (torch.hub trusts whatever is there), by the full
  digest or by the prefix torchvision puts in its file names;
- reporting through our ``progress(done, total)`` callback instead of drawing. The models
  room never prints, so torch.hub runs with ``progress=False`` and a helper thread reports
  the size of its partial file (the total comes from a HEAD request; ``None`` if refused).

Nothing here is called at import time; tests serve files from a loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from deconvnet.errors import WeightsError

ProgressFn = Callable[[int, int | None], None]

CHUNK_BYTES = 1 << 20
HEAD_TIMEOUT_S = 30.0
MIN_SHA_PREFIX = 8
REPORT_EVERY_S = 0.1
"""How often the helper thread reports the partial file's size while downloading."""
HASH_MISMATCH = "invalid hash value"
"""How torch.hub's RuntimeError begins when the downloaded file fails the prefix check."""
USER_AGENT = "torch.hub"
"""The header torch.hub sends, so the HEAD request looks like the download that follows."""


def cache_dir() -> Path:
    """Where named weight sets live: ``torch.hub.get_dir()/checkpoints`` (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large checkpoints need little memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def matches_sha256(actual: str, expected: str) -> bool:
    """True if ``actual`` equals ``expected`` or starts with it (torchvision file names
    carry only a prefix of the digest)."""
    return actual.lower().startswith(expected.lower())


def check_sha256(path: Path, expected: str | None, actual: str | None = None) -> None:
    """Raise :class:`WeightsError` when ``path`` does not hash to ``expected`` (or its
    prefix); ``actual`` is its digest when already computed."""
    if expected is None:
        return
    actual = actual or sha256_of(path)
    if not matches_sha256(actual, expected):
        raise WeightsError(
            f"{path} has sha256 {actual[:16]}..., expected {expected[:16]}...: "
            "the file is corrupt or a different version; delete it and try again"
        )


def fetch(
    url: str,
    file_name: str,
    sha256: str | None,
    *,
    progress: ProgressFn | None = None,
    directory: Path | None = None,
) -> Path:
    """Return the local path of ``file_name``, downloading it from ``url`` if absent.

    Parameters
    ----------
    url
        Where the file is published.
    file_name
        Name inside the cache directory.
    sha256
        Full hex digest or a prefix of at least ``MIN_SHA_PREFIX`` characters; checked on
        every call (a cached file can be truncated by a crash elsewhere), ``None`` skips it.
    progress
        Called as ``progress(bytes_done, bytes_total_or_None)`` while downloading: once at
        the start, from a helper thread while bytes arrive, and once at the end.
    directory
        Cache directory; default :func:`cache_dir`.

    Raises
    ------
    WeightsError
        The download failed (offline, HTTP error) or the digest does not match; nothing is
        left under ``file_name`` then.
    """
    if sha256 is not None and len(sha256) < MIN_SHA_PREFIX:
        raise WeightsError(f"sha256 prefix {sha256!r} too short, need >= {MIN_SHA_PREFIX} hex")
    target_dir = directory if directory is not None else cache_dir()
    target = target_dir / file_name
    if target.is_file():
        check_sha256(target, sha256)
        return target
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        # A private folder: the helper thread finds torch.hub's partial file there, and a
        # failed download leaves nothing beside the cache's finished files.
        staging = Path(tempfile.mkdtemp(dir=target_dir, prefix=f".{file_name}."))
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {target_dir}: {exc}") from exc
    try:
        with _reporting(url, staging, progress):
            _download(url, staging / file_name, sha256, target)
        os.replace(staging / file_name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(url: str, destination: Path, sha256: str | None, target: Path) -> None:
    """torch.hub's download, its errors as :class:`WeightsError` naming the ``target``."""
    try:
        torch.hub.download_url_to_file(
            url,
            str(destination),
            hash_prefix=None if sha256 is None else sha256.lower(),
            progress=False,
        )
    except RuntimeError as exc:
        if HASH_MISMATCH not in str(exc):
            raise
        raise WeightsError(
            f"downloaded {url} has the wrong sha256 ({exc}): the server sent a different "
            "file; nothing was saved"
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"could not download {url} ({reason}); download it by hand and save it as {target}"
        ) from exc


@contextmanager
def _reporting(url: str, staging: Path, progress: ProgressFn | None) -> Iterator[None]:
    """Report the bytes in ``staging`` to ``progress`` while the body runs, then the total.

    An error raised by ``progress`` in the helper thread ends the reports and is raised
    here once the body is done, as if ``progress`` had been called in this thread.
    """
    if progress is None:
        yield
        return
    total = _content_length(url)
    progress(0, total)
    stop = threading.Event()
    failures: list[Exception] = []

    def report() -> None:
        while not stop.wait(REPORT_EVERY_S):
            try:
                progress(_bytes_in(staging), total)
            except Exception as exc:  # re-raised in the calling thread below
                failures.append(exc)
                return

    reporter = threading.Thread(target=report, name="deconvnet-download-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
    if failures:
        raise failures[0]
    done = _bytes_in(staging)
    progress(done, total if total is not None else done)


def _content_length(url: str) -> int | None:
    """The size the server announces for ``url``, or ``None`` (no header, HEAD refused)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return None  # the download itself reports why, with the offline message
    return int(length) if length is not None and length.isdigit() else None


def _bytes_in(folder: Path) -> int:
    """Bytes written so far into ``folder`` (one partial or finished file)."""
    total = 0
    for path in folder.iterdir():
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # torch.hub renamed or removed it meanwhile
            continue
    return total
