"""Serving files from a fixed folder without ever leaving it.

A relative name from a URL is refused (``None``) when it is empty, absolute, holds a
backslash or NUL, has an empty, ``.`` or ``..`` part (whatever its percent-encoding was:
the router decodes ``%2e%2e%2f`` to ``../`` before this sees it), or resolves, through
symlinks, to anything but a regular file inside the folder, or cannot be looked up at all.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath


def file_inside(root: Path, relative: str) -> Path | None:
    """The file ``root/relative`` when it is safely inside ``root``, else ``None``."""
    if not relative or "\\" in relative or "\x00" in relative:
        return None
    if PurePosixPath(relative).is_absolute() or relative.startswith("~"):
        return None
    parts = relative.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        return None
    try:
        base = root.resolve()
        target = base.joinpath(*parts).resolve()
        inside = target.is_relative_to(base) and target.is_file()
    except (OSError, ValueError):  # a name too long for the file system, say
        return None
    return target if inside else None
