"""The CLI's progress bars: tqdm fed by the library's ``progress(done, total)`` callbacks."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import tqdm.std

from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.models._download import fetch

MIB = 1 << 20


class Clock:
    """tqdm's clock, moved by hand so rates and ETAs are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tqdm.std, "time", fake)
    return fake


def _drawn(calls: list[tuple[float, int, int | None]], clock: Clock, unit: str) -> str:
    """What a forced bar writes for ``(time, done, total)`` calls, up to its last state."""
    stream = io.StringIO()
    with ProgressBar("scan", unit=unit, file=stream, disable=False) as bar:
        for when, done, total in calls:
            clock.now = when
            bar(done, total)
    return stream.getvalue()


def test_counts_rate_and_eta(clock: Clock) -> None:
    # 50 of 100 in 10 s: 5 per second, 10 s to go.
    last = _drawn([(0, 0, 100), (10, 50, 100)], clock, "img").split("\r")[-1]
    assert "50/100" in last and "5.00img/s" in last and "00:10<00:10" in last
    assert last.endswith("\n")  # closing ends the line for what is printed next


def test_a_resumed_run_counts_from_its_first_report(clock: Clock) -> None:
    # A scan resumed at 40 of 100 that reaches 60 in 10 s runs at 2 per second: 20 s left.
    last = _drawn([(0, 40, 100), (10, 60, 100)], clock, "img").split("\r")[-1]
    assert "60/100" in last and "2.00img/s" in last and "00:10<00:20" in last


def test_bytes_are_scaled_by_1024(clock: Clock) -> None:
    last = _drawn([(0, 0, 2 * MIB), (2, MIB, 2 * MIB)], clock, "B").split("\r")[-1]
    assert "1.00M/2.00M" in last and "00:02<00:02" in last and "B/s" in last


def test_work_that_never_reports_draws_nothing() -> None:
    stream = io.StringIO()
    with ProgressBar("downloading default weights", unit="B", file=stream, disable=False):
        pass
    assert stream.getvalue() == ""


def test_silent_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar("scan", unit="img", file=stream) as bar:
        for done in range(0, 101, 10):
            bar(done, 100)
    assert stream.getvalue() == ""


@pytest.fixture
def served(server: tuple[str, Path]) -> tuple[str, bytes]:
    """(URL, bytes) of a 3 MiB file on the loopback server."""
    base, root = server
    payload = bytes(range(256)) * (3 * MIB // 256)
    (root / "w.bin").write_bytes(payload)
    return f"{base}/w.bin", payload


def test_the_download_bar_shows_the_bytes_fetched(
    served: tuple[str, bytes], tmp_path: Path
) -> None:
    url, payload = served
    stream = io.StringIO()
    with ProgressBar("downloading w", unit="B", file=stream, disable=False) as bar:
        path = fetch(
            url,
            "w.bin",
            hashlib.sha256(payload).hexdigest(),
            progress=bar,
            directory=tmp_path / "cache",
        )
    assert path.read_bytes() == payload
    last = stream.getvalue().split("\r")[-1]
    assert last.startswith("downloading w: 100%") and "3.00M/3.00M" in last
