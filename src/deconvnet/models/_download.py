"""Fetch a weights file once into torch's hub cache, verified by SHA-256, written atomically.

Kept apart from the registry so the network code is one small, separately tested unit
(tests serve files from a loopback HTTP server; nothing here is called at import time).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from deconvnet.errors import WeightsError

ProgressFn = Callable[[int, int | None], None]

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
MIN_SHA_PREFIX = 8


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


def check_sha256(path: Path, expected: str | None) -> None:
    """Raise :class:`WeightsError` when ``path`` does not hash to ``expected`` (or its prefix)."""
    if expected is None:
        return
    actual = sha256_of(path)
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
        Called as ``progress(bytes_done, bytes_total_or_None)`` while downloading.
    directory
        Cache directory; default :func:`cache_dir`.

    Raises
    ------
    WeightsError
        The download failed (offline, HTTP error) or the digest does not match.
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
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {target_dir}: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{file_name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _download_into(url, out, progress)
        if sha256 is not None and not matches_sha256(digest, sha256):
            raise WeightsError(
                f"downloaded {url} has sha256 {digest[:16]}..., expected {sha256[:16]}...: "
                "the server sent a different file; nothing was saved"
            )
        os.replace(tmp, target)
    except WeightsError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"could not download {url} ({reason}); download it by hand and save it as {target}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download_into(url: str, out: BinaryIO, progress: ProgressFn | None) -> str:
    """Stream ``url`` into the binary file ``out``; return the hex SHA-256 of what was read."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        done = 0
        if progress is not None:
            progress(done, total)
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()
