"""The one atomic file writer: every file the package writes goes through :func:`atomic_write`.

It lives in the lowest room that writes files (the top-k scan's checkpoint); the figures'
PNG and JSON writers (:mod:`deconvnet.figures.files`) use it too. A write goes to a new file
beside its target and is moved into place with ``os.replace``, so a crash or a full disk
never leaves a half-written file under the name a reader looks for.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o666
"""Mode asked for on creation; the umask removes bits from it, as for any ``open()``."""

_NAME_BYTES = 8
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
    temp = path.parent / f".{path.name}.{secrets.token_hex(_NAME_BYTES)}.tmp"
    descriptor = os.open(temp, _CREATE, FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
