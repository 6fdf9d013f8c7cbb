"""The one atomic file writer: every file the package writes goes through :func:`atomic_write`.

It lives in the ground room, below every room that writes files: the top-k scan's
checkpoints, the figures' PNG and JSON writers (:mod:`deconvnet.figures.files`) and the
faces' outputs. A write goes to a new file beside its target and is moved into place with
``os.replace``, so a crash or a full disk never leaves a half-written file under the name a
reader looks for.

A process killed mid-write (SIGKILL) leaves its temporary file behind;
:func:`remove_stale_temporaries` removes such leftovers of this module's own naming
(``.<name>.<16 hex digits>.tmp``) at the next run into that folder. A writer holds an
exclusive ``flock`` on its temporary file while it writes, so a live writer's file (of this
or another process) is never taken for stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

FILE_MODE = 0o666
"""Mode asked for on creation; the umask removes bits from it, as for any ``open()``."""

NAME_MAX = 255
"""Bytes in one path component on Linux, macOS and Windows file systems (``ENAMETOOLONG``)."""
HASH_CHARS = 12
"""Hex digits of SHA-256 that stand for the cut part of a shortened name."""

_NAME_BYTES = 8
STALE_AFTER_S = 1.0
"""A lock-free temporary file this old is stale (the gap between creating it and locking it
is microseconds)."""
_TEMP_NAME = re.compile(rf"^\..+\.[0-9a-f]{{{2 * _NAME_BYTES}}}\.tmp$", re.DOTALL)
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
        _lock(descriptor)
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


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when killed.

    Only regular files named like ours, older than :data:`STALE_AFTER_S` and not locked by a
    writer are removed; a missing or unreadable folder is left alone. Returns what was
    removed.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        path = folder / name
        if _TEMP_NAME.match(name) and _is_abandoned(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _is_abandoned(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or time.time() - status.st_mtime < STALE_AFTER_S:
            return False
        return _try_lock(descriptor)
    finally:
        os.close(descriptor)


def _lock(descriptor: int) -> None:
    """Hold an exclusive lock while writing (POSIX; elsewhere age alone marks stale files)."""
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a file system without locks: age still counts
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _try_lock(descriptor: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


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
