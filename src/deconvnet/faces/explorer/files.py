"""Serving files from a fixed folder without ever leaving it.

A relative name from a URL goes through the package's one containment check,
:func:`deconvnet.storage.paths.file_inside` (the router has already decoded ``%2e%2e%2f`` to
``../``): refused (``None``) when it is empty, absolute, holds a backslash, NUL or control
character, has an empty, ``.`` or ``..`` part, or resolves, through symlinks, to anything but
a regular file inside the folder.
"""

from __future__ import annotations

from pathlib import Path

from deconvnet.storage import paths


def file_inside(root: Path, relative: str) -> Path | None:
    """The file ``root/relative`` when it is safely inside ``root``, else ``None``."""
    try:
        return paths.file_inside(root, relative)
    except paths.UnsafePathError:
        return None
