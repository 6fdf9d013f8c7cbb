"""One rank of the killed-rank test (run by torchrun, not collected by pytest).

The ``deconvnet`` command with every image read ``SLOW_TOPK_DELAY`` seconds slower, so the
test can kill a rank mid-scan, and a line ``RANK ATTEMPT DONE`` appended to
``SLOW_TOPK_LOG`` where each rank's scan starts (``DONE`` > 0: it resumed a checkpoint).
"""

from __future__ import annotations

import os
import time

from deconvnet.faces.cli import main
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.inputs.datasets import ImageFolder, Item

DELAY_S = float(os.environ["SLOW_TOPK_DELAY"])
LOG = os.environ["SLOW_TOPK_LOG"]
read = ImageFolder.__getitem__
report = ProgressBar.__call__


def slow_read(self: ImageFolder, image_id: int) -> Item:
    time.sleep(DELAY_S)
    return read(self, image_id)


def logged_report(self: ProgressBar, done: int, total: int | None) -> None:
    if self.bar is None and self.label.startswith("scan"):
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(f"{os.environ['RANK']} {attempt} {done}\n")
    report(self, done, total)


ImageFolder.__getitem__ = slow_read  # type: ignore[method-assign]
ProgressBar.__call__ = logged_report  # type: ignore[method-assign]
raise SystemExit(main())
