"""The hostile-input suite: generated cases against every surface that reads what others
made (scan folders, manifests, parts files, prototxt names, HTTP requests, work sizes, own
model code, torchrun ranks, shared models).

Each case is classified as one of :data:`OUTCOMES`; the bad ones (a traceback, a hang, a
write outside the output folder, a silent wrong result) must stay at zero. The session's
counts are printed at the end of the run (``hostile inputs: N cases, ...``), for the
closing note. Sizes: the default suite runs a sample of each generator in well under a
minute; ``-m slow`` runs the full counts.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deconvnet.errors import DeconvnetError
from deconvnet.faces.cli import main
from tests._fuzz import deadline
from tests.faces.conftest import make_photos

CLEAN = "clean"
"""Accepted and right, or refused with one line: what every case must end as."""
TRACEBACK, HANG, ESCAPE, WRONG = "traceback", "hang", "write outside", "silent wrong result"
OUTCOMES = (CLEAN, TRACEBACK, HANG, ESCAPE, WRONG)
CASE_SECONDS = 20.0
"""A case still running after this long is a hang."""


@dataclass
class Tally:
    """Outcome counts per surface, and the first few details of every bad outcome."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    def add(self, surface: str, outcome: str, detail: str = "") -> None:
        self.counts[(surface, outcome)] += 1
        if outcome != CLEAN and len(self.details) < 20:
            self.details.append(f"{surface}: {outcome}: {detail[-600:]}")

    def bad(self, surface: str) -> dict[str, int]:
        return {
            outcome: self.counts[(surface, outcome)]
            for outcome in OUTCOMES[1:]
            if self.counts[(surface, outcome)]
        }

    def total(self, outcome: str | None = None) -> int:
        return sum(n for (_, kind), n in self.counts.items() if outcome in (None, kind))

    @contextlib.contextmanager
    def case(self, surface: str, detail: str = "") -> Iterator[Callable[[str, str], None]]:
        """Run one case: an exception that is not ours is a traceback, overtime a hang
        (also when the command caught the alarm's ``TimeoutError`` as an OS error).

        The block may call the yielded ``mark(outcome, why)`` to classify it otherwise
        (a write outside, a wrong result); otherwise it is clean."""
        marked: list[tuple[str, str]] = []
        start = time.monotonic()
        try:
            with deadline(CASE_SECONDS):
                yield lambda outcome, why="": marked.append((outcome, why))
        except TimeoutError:
            marked.append((HANG, detail))
        except DeconvnetError as error:  # refused by the library itself: must be one line
            if "\n" in str(error):
                marked.append((TRACEBACK, f"{detail}: multi-line error {error!s}"))
        except Exception:
            marked.append((TRACEBACK, f"{detail}: {traceback.format_exc(limit=6)}"))
        if time.monotonic() - start >= CASE_SECONDS:  # the alarm fired, even if caught inside
            marked.insert(0, (HANG, detail))
        outcome, why = marked[0] if marked else (CLEAN, "")
        self.add(surface, outcome, why or detail)


_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    return _TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY.counts:
        return
    parts = ", ".join(f"{_TALLY.total(kind)} {kind}" for kind in OUTCOMES[1:])
    terminalreporter.write_line(f"hostile inputs: {_TALLY.total()} cases; {parts}")
    surfaces = sorted({surface for surface, _ in _TALLY.counts})
    for surface in surfaces:
        count = sum(n for (s, _), n in _TALLY.counts.items() if s == surface)
        terminalreporter.write_line(f"  {surface}: {count} cases {_TALLY.bad(surface) or ''}")
    for detail in _TALLY.details:
        terminalreporter.write_line(f"  ! {detail}")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``deconvnet ARGV`` in this process: (exit code, stdout, stderr); a traceback raises.

    A ``SystemExit`` that escapes :func:`main` counts as the process would have exited."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_refusal(code: int, err: str) -> bool:
    """Exit 1 with exactly one ``deconvnet: error:`` line on stderr."""
    lines = [line for line in err.splitlines() if line.strip()]
    return code == 1 and len(lines) == 1 and lines[0].startswith("deconvnet: error: ")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Relative name -> (size, mtime_ns) of everything under ``root`` (links not followed)."""
    found = {}
    for path in root.rglob("*"):
        info = path.lstat()
        found[path.relative_to(root).as_posix()] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope="session")
def tiny_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real scan of 4 photos, 2 maps x k=2 of conv1 (the default model): 4 entries."""
    photos = make_photos(tmp_path_factory.mktemp("hostile_photos") / "photos", count=4)
    out = tmp_path_factory.mktemp("hostile_scan") / "scan"
    argv = ["topk", str(photos), "--layers", "conv1", "--maps", "2", "--k", "2"]
    assert main([*argv, "--workers", "0", "--tile", "128", "--out", str(out)]) == 0
    return out
