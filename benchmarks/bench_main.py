"""The main job's cost: wall time and peak memory of CLI runs, each in a fresh process.

Rows: the README's main-job command (embedded default model, bundled photo), then
``project --select top:9`` at each conv layer of ``caffenet`` with random weights on the
same photo. Target: the main job under 30 s on this 2-core machine. ``--device cuda`` runs
every command with ``--device cuda``.

    python benchmarks/bench_main.py [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of

CAFFENET_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
TARGET_SECONDS = 30.0


def run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and the child's peak RSS (MiB) of ``deconvnet ARGV``."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "deconvnet", *argv, "--out", out], stdout=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"deconvnet {' '.join(argv)} failed with {child.returncode}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    device = ["--device", str(device_of(parser.parse_args()))]
    rows = [("main job: deconvnet project --out DIR", ["project", *device])]
    rows += [
        (
            f"caffenet (random) {layer} top:9",
            ["project", "--model", "caffenet", "--layer", layer, *device],
        )
        for layer in CAFFENET_CONVS
    ]
    print(f"{'command':<42}{'wall (s)':>10}{'peak RSS (MiB)':>16}")
    for label, argv in rows:
        seconds, peak = run(argv)
        print(f"{label:<42}{seconds:>10.2f}{peak:>16.0f}")
        if label.startswith("main job") and seconds > TARGET_SECONDS:
            print(f"  over the {TARGET_SECONDS:.0f} s target")


if __name__ == "__main__":
    main()
