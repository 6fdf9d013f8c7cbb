"""The one atomic writer (deconvnet.storage.atomic): file modes follow the umask, failures
leave the old file, and the top-k checkpoint goes through it.

Oracle for modes: ``0o666 & ~umask``, what ``open()`` gives any new file, checked against a
file made here with plain ``open()`` under the same umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from deconvnet import topk
from deconvnet.instruments.topk import checkpoint as checkpoint_file
from deconvnet.storage.atomic import atomic_write
from tests import _datasets, _nets


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


UMASKS = pytest.mark.parametrize(
    ("umask", "expected"), [(0o022, 0o644), (0o027, 0o640)], ids=["umask 0022", "umask 0027"]
)


@UMASKS
def test_new_and_replaced_files_get_the_umask_mode(
    tmp_path: Path, set_umask: Callable[[int], int], umask: int, expected: int
) -> None:
    set_umask(umask)
    with (tmp_path / "plain.bin").open("wb") as handle:
        handle.write(b"x")
    assert _mode(tmp_path / "plain.bin") == expected  # the oracle agrees with the table
    path = atomic_write(tmp_path / "a" / "data.bin", lambda handle: handle.write(b"new"))
    assert path.read_bytes() == b"new" and _mode(path) == expected
    path.chmod(0o600)  # an old file's mode is not inherited: the umask decides
    atomic_write(path, lambda handle: handle.write(b"again"))
    assert path.read_bytes() == b"again" and _mode(path) == expected
    assert sorted(os.listdir(path.parent)) == ["data.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "keep.bin", lambda handle: handle.write(b"old"))

    def broken(handle: object) -> None:
        handle.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["keep.bin"]


@UMASKS
def test_the_scan_checkpoint_gets_the_umask_mode(
    tmp_path: Path, set_umask: Callable[[int], int], umask: int, expected: int
) -> None:
    set_umask(umask)
    data = _datasets.tie_images(tmp_path)
    checkpoint = tmp_path / "scan" / "topk.pt"
    topk.scan(_nets.tie_net(), data, ["0"], k=2, checkpoint=checkpoint, checkpoint_every=1)
    assert _mode(checkpoint) == expected
    assert checkpoint_file.read_payload(checkpoint)["done"] == len(data)
    assert os.listdir(checkpoint.parent) == ["topk.pt"]
