"""The CLI's one error boundary: every OS error and running out of memory is one line, exit 1.

Cases from issue 11 (point 5): ``--out`` at a file, under a file, in a read-only folder, on a
read-only file system, on a full disk, names past 255 bytes; ``deconvnet models | head``.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deconvnet.faces.cli import EXIT_BROKEN_PIPE, main
from deconvnet.inputs import images
from deconvnet.storage import atomic

FAST = ["--select", "top:1"]
"""One projection of the default model: the quickest run that writes files."""


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("deconvnet: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_out_at_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["project", *FAST, "--out", str(target)]) == 1
    assert str(target) in _one_error_line(capsys)
    assert target.read_text() == "x"


def test_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    assert main(["project", *FAST, "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert str(out) in line and "Not a directory" in line


def test_out_in_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user (root?) can write to a chmod 555 folder anyway")
        assert main(["project", *FAST, "--out", str(locked / "out")]) == 1
        line = _one_error_line(capsys)
        assert str(locked / "out") in line and "Permission denied" in line
    finally:
        locked.chmod(0o755)


def _failing_open(code: int) -> Any:
    """``os.open`` for atomic writes that fails like a file system giving ``code``; reads
    (the input photo) still work."""
    real_open = os.open

    def fail(path: Any, flags: int, mode: int = 0o777) -> int:
        if not flags & os.O_CREAT:
            return real_open(path, flags, mode)
        raise OSError(code, os.strerror(code), os.fspath(path))

    return fail


def test_read_only_file_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EROFS simulated at the OS boundary: a read-only mount needs privileges tests lack."""
    monkeypatch.setattr(atomic.os, "open", _failing_open(errno.EROFS))
    out = tmp_path / "out"
    assert main(["project", *FAST, "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert "Read-only file system" in line and str(out) in line
    assert not out.exists()  # the folder the failed run made is removed again


class _FullDisk:
    """A file handle whose writes fail as on a full disk: ``ENOSPC`` naming no file."""

    def __init__(self, descriptor: int) -> None:
        os.close(descriptor)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdopen = os.fdopen

    def fdopen(descriptor: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" not in mode:  # reading the input photo still works
            return real_fdopen(descriptor, mode, *args, **kwargs)
        return _FullDisk(descriptor)

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    out = tmp_path / "out"
    assert main(["project", *FAST, "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert "No space left on device" in line and f"{out}{os.sep}" in line
    assert not out.exists()  # no temporary file left behind either


LIMITED_RUN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
from deconvnet.faces.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_file_size_limit_in_a_subprocess(tmp_path: Path) -> None:
    """A real failing write (RLIMIT_FSIZE stands in for a full disk)."""
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-c", LIMITED_RUN, "project", *FAST, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("deconvnet: error:") and "File too large" in lines[-1]
    assert "Traceback" not in run.stderr
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_out_component_past_255_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / ("o" * 300)
    assert main(["project", *FAST, "--out", str(out)]) == 1
    assert "File name too long" in _one_error_line(capsys)


def test_long_input_names_give_short_output_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 250-byte image name: every output name (and temporary name) stays within 255."""
    names = [f"{'é' * 123}{tail}.png" for tail in "ab"]  # 250 bytes each, same head
    photos = [tmp_path / name for name in names]
    for photo in photos:
        shutil.copy(images.bundled_photo(), photo)
    out = tmp_path / "out"
    assert main(["project", *FAST, "--out", str(out), *map(str, photos)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 5  # two sheets, two tiles, the manifest
    assert all(len(name.encode()) <= atomic.NAME_MAX for name in written)
    assert len({name.split("_sheet")[0] for name in written if "_sheet" in name}) == 2


def test_short_name_keeps_short_names_and_hashes_long_ones() -> None:
    assert atomic.short_name("cat.png") == "cat.png"
    long = "x" * 300 + ".png"
    short = atomic.short_name(long)
    assert len(short.encode()) == atomic.NAME_MAX and short.endswith(".png")
    assert short != atomic.short_name("x" * 301 + ".png")  # the hash tells them apart
    cut = atomic.short_name("€" * 100, 40)  # 3-byte characters are never split
    assert len(cut.encode()) <= 40 and cut.startswith("€" * 9)
    undecodable = os.fsdecode(b"\xff" * 300)
    assert len(os.fsencode(atomic.short_name(undecodable))) <= atomic.NAME_MAX


def test_atomic_write_to_a_long_name(tmp_path: Path) -> None:
    """The temporary name adds 22 bytes: a 250-byte target still writes."""
    target = tmp_path / ("n" * 250)
    atomic.atomic_write(target, lambda handle: handle.write(b"ok"))
    assert target.read_bytes() == b"ok"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_out_of_memory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deconvnet.faces.cli.commands import project

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(project, "prepare", exhausted)
    assert main(["project", *FAST, "--out", str(tmp_path / "out")]) == 1
    assert _one_error_line(capsys) == "deconvnet: error: out of memory"


def test_closed_stdout_exits_quietly() -> None:
    """``deconvnet models | head -0``: the reader is gone before the first line."""
    child = subprocess.Popen(
        [sys.executable, "-m", "deconvnet", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # closed before the interpreter has even imported torch
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == EXIT_BROKEN_PIPE
    assert err == ""
