"""One containment check for every file name the package did not choose itself.

A scan folder, a manifest or a site is something people download and share: the names
inside them (``tile_file``, a manifest's ``files``) are untrusted. So are names made from
inputs (a prototxt layer name in an output file's name). :func:`inside` resolves such a
name inside its folder or refuses it with :class:`UnsafePathError`, one line naming what
and why:

* **lexically**: a ``str`` that is not empty, holds no NUL, backslash or control
  character, is not absolute (no ``/`` or drive in front, no ``~``), has no empty, ``.``
  or ``..`` part, and whose parts fit the file system's 255 bytes;
* **after resolving symlinks**: the path (with every symlink on the way followed, the
  last component too) still lies inside the resolved folder. A symlink that stays inside
  is allowed; ``no_symlinks=True`` (for deleting) refuses every symlink on the way.

:func:`component` turns any text into one safe path component (for names made from
inputs), and :func:`separate_folders` refuses an output folder equal to, inside or above
the folder it reads (``site SCAN --out SCAN`` would otherwise delete the scan's files).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from deconvnet.errors import InputError

NAME_MAX = 255
"""Bytes in one path component on Linux, macOS and Windows file systems."""
PATH_MAX = 4096
"""Bytes in a relative name read from a file (Linux's ``PATH_MAX``)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_COMPONENT = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]+")


class UnsafePathError(InputError):
    """A file name that is malformed or would leave the folder it must stay in."""


def check_relative(name: object, *, what: str = "file name") -> tuple[str, ...]:
    """The parts of ``name`` when it is a plain relative name (see the module), else
    :class:`UnsafePathError`. Nothing on disk is looked at."""
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} must be a string, got {type(name).__name__}")
    reason = _lexical_problem(name)
    if reason:
        raise UnsafePathError(f"{what} {_shown(name)} {reason}")
    return tuple(name.split("/"))


def inside(
    root: str | os.PathLike[str],
    name: object,
    *,
    what: str = "file name",
    no_symlinks: bool = False,
) -> Path:
    """``root/name`` with symlinks resolved, when that is inside ``root`` (resolved too).

    The result may not exist yet (a file to write); use :func:`file_inside` for one to read.

    Raises
    ------
    UnsafePathError
        ``name`` is not a plain relative name, resolves outside ``root``, or (with
        ``no_symlinks``) passes through a symlink.
    """
    parts = check_relative(name, what=what)
    try:
        base = Path(root).resolve()
        if no_symlinks:
            _refuse_symlinks(base, parts, what, str(name))
        target = base.joinpath(*parts).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a symlink loop, say
        raise UnsafePathError(f"{what} {_shown(str(name))} cannot be resolved: {error}") from error
    if target != base and not target.is_relative_to(base):
        raise UnsafePathError(f"{what} {_shown(str(name))} leaves {root}")
    return target


def file_inside(root: str | os.PathLike[str], name: object, *, what: str = "file name") -> Path:
    """:func:`inside`, and the target must be an existing regular file (after resolving).

    Raises
    ------
    UnsafePathError
        As :func:`inside`, or the target is missing or not a regular file.
    """
    target = inside(root, name, what=what)
    try:
        mode = target.stat().st_mode
    except OSError as error:
        raise UnsafePathError(f"{what} {_shown(str(name))} is missing from {root}") from error
    if not stat.S_ISREG(mode):
        raise UnsafePathError(f"{what} {_shown(str(name))} in {root} is not a regular file")
    return target


def component(text: str, replacement: str = "_") -> str:
    """``text`` as one file-name component: separators and control characters
    replaced, leading dots dropped (no ``.``, ``..`` or hidden file); never empty.

    Length is the caller's (:func:`~deconvnet.storage.atomic.short_name`)."""
    cleaned = _UNSAFE_COMPONENT.sub(replacement, text).lstrip(".")
    return cleaned or replacement


def separate_folders(
    out: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    out_flag: str = "--out",
    source_flag: str = "the input folder",
) -> None:
    """Refuse an output folder that is ``source``, lies inside it or holds it.

    Checked on resolved paths (symlinks followed; ``out`` need not exist yet), before
    anything is written or deleted.

    Raises
    ------
    UnsafePathError
        The folders are the same, or one contains the other.
    """
    written, read = Path(out).resolve(), Path(source).resolve()
    if written == read:
        relation = "is"
    elif written.is_relative_to(read):
        relation = "lies inside"
    elif read.is_relative_to(written):
        relation = "holds"
    else:
        return
    raise UnsafePathError(
        f"{out_flag} {out} {relation} {source_flag} {source}; choose a folder apart from it"
    )


def _lexical_problem(name: str) -> str:
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX:
        return f"is longer than {PATH_MAX} bytes"
    if _CONTROL.search(name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor or name[0] == "~":
        return "is absolute"
    parts = name.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        return "has an empty, '.' or '..' part"
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in parts):
        return f"has a part longer than {NAME_MAX} bytes"
    return ""


def _refuse_symlinks(base: Path, parts: tuple[str, ...], what: str, name: str) -> None:
    for depth in range(1, len(parts) + 1):
        try:
            mode = base.joinpath(*parts[:depth]).lstat().st_mode
        except FileNotFoundError:
            return  # nothing further exists, so nothing further is a link
        if stat.S_ISLNK(mode):
            raise UnsafePathError(f"{what} {_shown(name)} passes through a symlink")


def _shown(name: str, limit: int = 120) -> str:
    """``name`` quoted with escapes (no control character reaches a terminal), shortened."""
    text = ascii(name) if _CONTROL.search(name) else repr(name)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
