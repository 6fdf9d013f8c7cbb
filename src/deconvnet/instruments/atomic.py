"""The one atomic file writer: every file the package writes goes through :func:`atomic_write`.

It lives in the lowest room that writes files (the top-k scan's checkpoint); the figures'
PNG and JSON writers (:mod:`deconvnet.figures.files`) use it too. A write goes to a new file
beside its target and is moved into place with ``os.replace``, so a crash or a full disk
never leaves a half-written file under the name a reader looks for.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o666
"""Mode asked for on creation; the umask removes bits from it, as for any ``open()``."""

NAME_MAX = 255
"""Bytes in one path component on Linux, macOS and Windows file systems (``ENAMETOOLONG``)."""
HASH_CHARS = 12
"""Hex digits of SHA-256 that stand for the cut part of a shortened name."""

_NAME_BYTES = 8
_TEMP_EXTRA = len(f"..{'0' * 2 * _NAME_BYTES}.tmp")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write through ``write(handle)`` to a temporary file beside ``path``, then move it there.

    The temporary file is created with :data:`FILE_MODE` under the process umask (0644
    under umask 0022), so results are as readable as any file the user makes;
    ``tempfile.mkstemp`` would give 0600. Its random name is created exclusively, so no
    other file is ever touched. Parent folders are created. On any error the temporary
    file is removed and an existing ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    base = short_name(path.name, NAME_MAX - _TEMP_EXTRA)
    temp = path.parent / f".{base}.{secrets.token_hex(_NAME_BYTES)}.tmp"
    descriptor = os.open(temp, _CREATE, FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        if error.errno is not None and error.filename is None:  # write() names no file
            raise OSError(error.errno, error.strerror, os.fspath(path)) from error
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def short_name(name: str, max_bytes: int = NAME_MAX) -> str:
    """``name`` if its UTF-8 fits ``max_bytes``, else its head, ``~`` and a hash of the whole.

    The hash keeps two long names that share a head apart; the extension (after the last
    dot, if short) is kept so the file still opens as what it is. Names from the file
    system may carry undecodable bytes as surrogate escapes; they count as their bytes.
    """
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= max_bytes:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension.encode("utf-8", "surrogateescape")) > HASH_CHARS:
        stem, extension = name, ""
    tail = f"~{hashlib.sha256(encoded).hexdigest()[:HASH_CHARS]}" + (
        f".{extension}" if extension else ""
    )
    room = max_bytes - len(tail.encode("utf-8", "surrogateescape"))
    if room < 0:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for a hash")
    sizes = itertools.accumulate(len(char.encode("utf-8", "surrogateescape")) for char in stem)
    kept = sum(1 for size in sizes if size <= room)  # whole characters only
    return stem[:kept] + tail
