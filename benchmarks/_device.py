"""``--device`` for every benchmark: where the models run, and clocks that wait for it.

On CUDA, kernels run asynchronously: a timing must wait for the device before it reads the
clock, and a GPU's reduced precision runs on its own kernels (cuDNN, cuBLAS), chosen by
``precision="auto"`` from the device's compute capability. The benchmarks call these
helpers and nothing else device-specific, so the same code runs on a CPU-only machine and
on a GPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the models run: cpu (default), cuda or cuda:N (both sides, same device)",
    )


def device_of(args: argparse.Namespace) -> torch.device:
    """The device asked for; one line and exit 2 when it is not there."""
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise SystemExit(f"--device {args.device!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {args.device}: only cpu and cuda are benchmarked")
    return device


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished what was queued (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, run: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``run`` takes on ``device``, waiting for the device on both ends."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def describe(device: torch.device) -> str:
    """The device in words, for a table's header."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (capability {major}.{minor})"
    return f"CPU, {torch.get_num_threads()} thread(s)"
