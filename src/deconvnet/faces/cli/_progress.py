"""A dependency-free progress bar for the command line (the library never draws one).

Library functions take an optional ``progress(done, total)`` callback; the CLI passes a
:class:`ProgressBar` so that long work shows progress, rate and ETA on stderr.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REFRESH_SECONDS = 0.2
BAR_WIDTH = 28


class ProgressBar:
    """Callable ``(done, total)`` that redraws one stderr line, at most every 0.2 s.

    Silent when stderr is not a terminal unless ``force=True``, so CI logs stay clean.
    """

    def __init__(
        self, label: str, unit: str = "it", stream: TextIO | None = None, force: bool = False
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or self.stream.isatty()
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not self.enabled or (now - self.last_draw < REFRESH_SECONDS and not finished):
            return
        self.last_draw = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        if total:
            frac = min(done / total, 1.0)
            filled = int(frac * BAR_WIDTH)
            eta = (total - done) / rate if rate > 0 else float("inf")
            line = (
                f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} "
                f"{rate:.1f} {self.unit}/s ETA {_seconds(eta)}"
            )
        else:
            line = f"{self.label} {done} {rate:.1f} {self.unit}/s"
        self.stream.write("\r" + line + " " * 4)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the bar's line so later output starts on a fresh one."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _seconds(value: float) -> str:
    if value == float("inf"):
        return "?"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}:{seconds:02d}"
