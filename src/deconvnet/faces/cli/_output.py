"""``--out`` for every sub-command that writes files: never a stale file beside a manifest.

Rules, the same for every such sub-command:

* A new path or an empty folder is used as it is.
* A folder that holds anything is refused (one line naming it and ``--overwrite``), unless
  ``--overwrite``: then the files its earlier ``manifest.json`` lists, and that manifest,
  are removed first. Nothing else is ever deleted: files no manifest lists stay (a note
  says how many), so do files outside the folder and whatever symlinks point at.
* A manifest that lists a name that is absolute, climbs out (``..``), passes through a
  symlink or names something other than a file is refused as a whole before anything is
  deleted, as is a manifest that cannot be read or has no ``files`` list.
* ``--resume`` (``topk``): the folder is the scan's own. Its checkpoints (one, or one per
  rank of a distributed scan: the files the ``resumable`` glob pattern matches) are kept and
  continued, the files its manifest lists are replaced without ``--overwrite``; other
  files are kept with the same note as ``--overwrite`` gives. A folder holding neither a
  checkpoint nor a manifest is no scan's and is refused as above.
* A run that fails or is interrupted removes the files it wrote (the checkpoint stays, to be
  resumed), so a later run never finds files of ours without their manifest.
* Temporary files that an earlier run killed mid-write left behind (named by
  :mod:`deconvnet.storage.atomic`, not locked by a live writer) are removed first.
* Names made from the user's inputs (``00_<image name>_sheet.png``) are shortened with a hash
  (:func:`output_stem`), so no name exceeds the file system's 255 bytes.
* Each manifest gets a top-level ``files``: the relative names (``/``-separated) of every file
  the run wrote, the manifest itself excluded.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deconvnet.errors import InputError
from deconvnet.faces.manifest import MANIFEST_FILE, read_manifest
from deconvnet.figures.files import write_json
from deconvnet.storage.atomic import remove_stale_temporaries, short_name
from deconvnet.storage.paths import UnsafePathError, component, inside, separate_folders

MANIFEST = MANIFEST_FILE
"""Every sub-command's manifest: what it did, and in ``files`` what it wrote."""

STEM_BYTES = 160
"""Most bytes of a file-name stem made from inputs; leaves 95 for suffixes (``_k12_map481.png``)."""

Command = Callable[[argparse.Namespace], int]
CommandWithOutput = Callable[[argparse.Namespace, "OutputFolder"], int]
_Identity = tuple[int, int, int, int]


def output_stem(text: str) -> str:
    """``text`` as the stem of output file names: one path component (no separator or
    control character from a layer or image name), shortened with a hash past
    :data:`STEM_BYTES`."""
    return short_name(component(text), STEM_BYTES)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--overwrite``."""
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: new or empty, or see --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"reuse a non-empty --out: first delete the files its {MANIFEST} lists (nothing else)",
    )


@dataclass(frozen=True)
class OutputFolder:
    """An ``--out`` folder made ready for one run, and what was in it when the run began."""

    path: Path
    before: Mapping[str, _Identity]
    """Relative name -> identity of every regular file present after preparing."""
    existing_folders: frozenset[str]
    """Relative names of the folders present after preparing (``"."`` for the folder)."""
    resumable: str | None = None
    """Glob pattern of the files the command continues from (``topk``'s checkpoints, one per
    rank when distributed), in the folder itself; they belong to every run."""

    def keeps(self, name: str) -> bool:
        """Whether ``name`` (relative) is one of the resumable files."""
        return _resumable(name, self.resumable)

    def written(self) -> list[str]:
        """Sorted relative names of the files this run wrote, the manifest excluded."""
        names = set(self._changed()) - {MANIFEST}
        names.update(name for name in _regular_files(self.path) if self.keeps(name))
        return sorted(names)

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        """Write ``manifest`` with its ``files`` list as ``manifest.json``; returns its path."""
        return write_json({**manifest, "files": self.written()}, self.path / MANIFEST)

    def discard(self) -> None:
        """Undo a failed run: remove the files it wrote, then the folders it made.

        A run whose manifest is written is complete and stays (a closed pipe while printing
        afterwards does not undo it); the resumable checkpoint always stays."""
        changed = self._changed()
        if MANIFEST in changed:
            return
        for name in changed:
            if not self.keeps(name):
                (self.path / name).unlink(missing_ok=True)
        made = set(_folders(self.path)) - self.existing_folders
        for name in sorted(made, key=lambda folder: (folder == ".", -folder.count("/"))):
            _remove_if_empty(self.path / name)  # deepest first, the --out folder last

    def _changed(self) -> list[str]:
        """Regular files that are new or replaced since preparing (``os.replace`` always
        gives a new inode, so a rewritten file counts even if its bytes are the same)."""
        now = _regular_files(self.path)
        return [name for name, identity in now.items() if self.before.get(name) != identity]


def writes_output(
    resumable: str | None = None, *, apart_from: tuple[str, str] | None = None
) -> Callable[[CommandWithOutput], Command]:
    """Decorate ``run(args, folder)``: prepare ``args.out`` first, undo a failed run's files.

    ``resumable`` names (a glob pattern of) the files the command continues from with
    ``--resume`` (the command defines ``--resume`` itself). ``apart_from`` is ``(attribute,
    shown name)`` of an input folder in ``args`` that ``--out`` must neither be, lie in nor
    hold; checked before anything is touched.
    """

    def decorate(run: CommandWithOutput) -> Command:
        @functools.wraps(run)
        def run_in_folder(args: argparse.Namespace) -> int:
            if apart_from is not None:
                source = getattr(args, apart_from[0], None)
                if source is not None and Path(source).is_dir():
                    separate_folders(args.out, source, source_flag=apart_from[1])
            resume = resumable is not None and bool(args.resume)
            output = prepare_output(
                args.out, overwrite=args.overwrite, resumable=resumable, resume=resume
            )
            try:
                return run(args, output)
            except BaseException:
                output.discard()
                raise

        return run_in_folder

    return decorate


def prepare_output(
    folder: Path, *, overwrite: bool, resumable: str | None = None, resume: bool = False
) -> OutputFolder:
    """Check ``folder`` against the rules above, delete what they say, and remember the rest.

    Raises
    ------
    InputError
        ``folder`` is a file, holds files and neither ``overwrite`` nor ``resume`` allows
        them, or its manifest is unreadable or lists a name outside the folder.
    """
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file, not a folder")
    for name in list(_folders(folder)):
        remove_stale_temporaries(folder / name)
    entries = list(_entries(folder)) if folder.is_dir() else []
    if not entries:
        return _remember(folder, resumable)
    if not (overwrite or resume):
        raise _not_empty(folder, entries, resumable)
    listed = _listed_files(folder) if MANIFEST in entries else []
    keep = {name for name in entries if _resumable(name, resumable)} if resume else set()
    unknown = [name for name in entries if name not in {*listed, MANIFEST, *keep}]
    if unknown and not overwrite and not listed and not keep:  # nothing of ours to resume
        raise _not_empty(folder, entries, None)
    _delete(folder, [*(name for name in listed if name not in keep), MANIFEST])
    if unknown:
        count = f"{len(unknown)} file{'s' if len(unknown) > 1 else ''}"
        print(f"note: kept {count} in {folder} that no manifest lists", file=sys.stderr)
    return _remember(folder, resumable)


def _not_empty(folder: Path, entries: list[str], resumable: str | None) -> InputError:
    found = any(_resumable(name, resumable) for name in entries)
    hint = ", or --resume to continue its checkpoint" if found else ""
    return InputError(
        f"--out {folder} is not empty ({len(entries)} entries); choose a new or empty folder, "
        f"or pass --overwrite to first delete the files its {MANIFEST} lists{hint}"
    )


def _resumable(name: str, pattern: str | None) -> bool:
    """``name`` lies in the folder itself (no ``/``) and matches ``pattern``."""
    return pattern is not None and "/" not in name and fnmatch.fnmatchcase(name, pattern)


def _remember(folder: Path, resumable: str | None) -> OutputFolder:
    return OutputFolder(
        path=folder,
        before=_regular_files(folder),
        existing_folders=frozenset(_folders(folder)),
        resumable=resumable,
    )


def _listed_files(folder: Path) -> list[str]:
    """The ``files`` of ``folder``'s manifest, each checked to be a file inside the folder."""
    manifest = folder / MANIFEST
    if not _is_regular(manifest):
        raise InputError(f"{manifest} is not a regular file; refusing to overwrite {folder}")
    try:
        files = read_manifest(manifest).get("files")
    except InputError as error:
        raise InputError(f"cannot read {error}; refusing to overwrite") from error
    if files is None:
        raise InputError(
            f"{manifest} has no 'files' list (an older deconvnet?); delete its folder's "
            "files yourself or choose another --out"
        )
    for name in files:
        _check_inside(folder, name)
    return list(files)


def _check_inside(folder: Path, name: str) -> None:
    """Refuse a manifest entry that could name anything but a file inside ``folder``: the
    containment check of :mod:`deconvnet.storage.paths`, with no symlink on the way."""
    refusal = (
        f"{folder / MANIFEST} lists a name that is not a file inside {folder}; "
        "refusing to delete anything"
    )
    if name == MANIFEST:
        raise InputError(refusal)
    try:
        target = inside(folder, name, what="a listed file", no_symlinks=True)
        mode = target.lstat().st_mode
    except UnsafePathError as error:
        raise InputError(f"{refusal} ({error})") from error
    except FileNotFoundError:
        return  # gone already: nothing to delete
    except OSError as error:  # a part of the name is a file, not a folder
        raise InputError(refusal) from error
    if not stat.S_ISREG(mode):
        raise InputError(refusal)


def _delete(folder: Path, names: list[str]) -> None:
    """Unlink ``names`` (checked by :func:`_check_inside`), then their emptied sub-folders."""
    parents: set[Path] = set()
    for name in names:
        path = folder / name
        path.unlink(missing_ok=True)
        parents.update(p for p in path.parents if p != folder and folder in p.parents)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        _remove_if_empty(parent)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or gone already): it stays as it is
        folder.rmdir()


def _entries(folder: Path, prefix: str = "") -> Iterator[str]:
    """Relative names of everything but folders under ``folder``; symlinks are not followed."""
    with os.scandir(folder) as scan:
        for entry in scan:
            name = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from _entries(Path(entry.path), f"{name}/")
            else:
                yield name


def _folders(folder: Path) -> Iterator[str]:
    """``"."`` for ``folder`` (if it exists) and the relative names of its sub-folders."""
    if not folder.is_dir():
        return
    yield "."
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                yield path.relative_to(folder).as_posix()


def _regular_files(folder: Path) -> dict[str, _Identity]:
    """Relative name -> (device, inode, mtime, size) of every regular file under ``folder``."""
    found = {}
    if folder.is_dir():
        for name in _entries(folder):
            info = (folder / name).lstat()
            if stat.S_ISREG(info.st_mode):
                found[name] = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
    return found


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False
