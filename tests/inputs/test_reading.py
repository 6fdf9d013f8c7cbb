"""Reading without blocking (deconvnet.inputs.reading): regular files only, size limits.

Each read that could block runs under a 5 s deadline (tests/_fuzz.py): the FIFO has no
writer, so a blocking ``open()`` would wait forever. Oracles: ``hashlib.sha256`` directly,
the bytes written.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from deconvnet.errors import ImageError, InputError
from deconvnet.faces.cli._classes import read_categories
from deconvnet.inputs.images import load_image
from deconvnet.inputs.reading import content_digest, read_regular_file, read_text_file
from tests._fuzz import deadline

SECONDS = 5.0


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "f.png"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_at_once_everywhere(fifo: Path) -> None:
    with deadline(SECONDS):
        with pytest.raises(InputError, match="FIFO"):
            read_regular_file(fifo, 100)
        with pytest.raises(ImageError, match="FIFO"):
            load_image(fifo)
        with pytest.raises(InputError, match="FIFO"):
            read_text_file(fifo)
        with pytest.raises(InputError, match="FIFO"):
            read_categories(fifo)


def test_devices_and_sockets_are_refused(tmp_path: Path) -> None:
    with deadline(SECONDS):
        with pytest.raises(ImageError, match="character device"):
            load_image("/dev/zero")
        path = tmp_path / "s.png"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            with pytest.raises(ImageError, match="socket"):
                load_image(path)


def test_reads_stop_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 11)
    assert read_regular_file(path, 11) == b"x" * 11
    with pytest.raises(InputError, match="11 bytes, more than the limit of 10"):
        read_regular_file(path, 10)


def test_text_files_must_be_utf8_text(tmp_path: Path) -> None:
    good = tmp_path / "names.txt"
    good.write_text("n01440764 tench, Tinca tinca\ngoldfish\n", encoding="utf-8")
    assert read_categories(good) == ("tench, Tinca tinca", "goldfish")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(InputError, match="binary"):
        read_text_file(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_categories(latin)
    with pytest.raises(InputError, match="not found"):
        read_text_file(tmp_path / "missing.txt")


def test_content_digest_is_sha256() -> None:
    data = os.urandom(1000)
    assert content_digest(data) == hashlib.sha256(data).digest()
