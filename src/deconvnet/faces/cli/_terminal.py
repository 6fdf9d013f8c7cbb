"""Terminal-safe output: names read from files never reach the terminal raw.

A layer name in a prototxt, an image name in a scan or a part in ``parts.json`` may hold
escape sequences that retitle the terminal, clear the screen or hide text. While a
command runs, :func:`terminal_safe` puts :class:`EscapingStream` in front of stdout and
stderr: every character that is not printable (``str.isprintable``: control characters,
C1 codes, bidirectional overrides, lone surrogates) is written as its Python escape
(``\\x1b``), except newlines and tabs (and carriage returns on stderr, which progress bars
use to redraw their line).
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import TextIO

STDOUT_KEEPS = "\n\t"
STDERR_KEEPS = "\n\t\r"


def printable(text: str, keep: str = STDOUT_KEEPS) -> str:
    """``text`` with every non-printable character but those in ``keep`` escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class EscapingStream(io.TextIOBase):
    """A text stream that escapes what :func:`printable` escapes, then writes to ``target``."""

    def __init__(self, target: TextIO, keep: str) -> None:
        super().__init__()
        self.target = target
        self.keep = keep

    def write(self, text: str) -> int:
        self.target.write(printable(text, self.keep))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def terminal_safe() -> Iterator[None]:
    """Escape what is printed to stdout and stderr while the block runs."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = EscapingStream(stdout, STDOUT_KEEPS)
    sys.stderr = EscapingStream(stderr, STDERR_KEEPS)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
