"""Progress bars for the command line, drawn by tqdm (the library never draws one).

Library functions take an optional ``progress(done, total)`` callback; the CLI passes a
:class:`ProgressBar`, which feeds those counts to a tqdm bar on stderr.
"""

from __future__ import annotations

from types import TracebackType
from typing import Never, TextIO

from tqdm import tqdm

BYTES = "B"
"""The unit of downloads: shown scaled by 1024 (KiB, MiB), the way torch.hub shows them."""


class ProgressBar:
    """Callable ``(done, total)`` that moves a tqdm bar to ``done`` of ``total``.

    The bar appears at the first call and counts from its ``done``, so the rate and the ETA
    measure this run's work only (a resumed topk scan starts at its checkpoint), and work
    that never reports (embedded weights: nothing to download) draws nothing. Silent when
    the stream is not a terminal, unless ``disable=False``, so CI logs and tests stay clean.
    """

    def __init__(
        self,
        label: str,
        unit: str = "it",
        *,
        file: TextIO | None = None,
        disable: bool | None = None,
    ) -> None:
        self.label = label
        self.unit = unit
        self.file = file
        self.disable = disable
        self.bar: tqdm[Never] | None = None  # a manual bar: it wraps no iterable

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            scaled = self.unit == BYTES
            self.bar = tqdm(
                desc=self.label,
                total=total,
                initial=done,
                unit=self.unit,
                unit_scale=scaled,
                unit_divisor=1024 if scaled else 1000,
                file=self.file,
                disable=self.disable,
                dynamic_ncols=True,
            )
            return
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Draw the final state and end the bar's line, so later output starts fresh."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
