"""Every benchmark takes ``--device``, and the device helpers branch correctly on a machine
without a GPU: CPU runs as it is, CUDA is refused with one line, and where CUDA is present
(answered here) the clocks wait for it.

Oracle: the option as argparse documents it, and the calls the helpers make.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _device  # noqa: E402  (the benchmarks' own helper module, found on their path)


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmark_takes_a_device(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(script), run_name="__main__")
    assert stopped.value.code == 0
    assert "--device" in capsys.readouterr().out


def _args(device: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _device.add_device_argument(parser)
    return parser.parse_args(["--device", device])


def test_cpu_is_the_default_and_runs_as_it_is():
    device = _device.device_of(_args("cpu"))
    assert device == torch.device("cpu")
    seconds, value = _device.timed(device, lambda: 41 + 1)
    assert value == 42 and seconds >= 0
    assert _device.describe(device).startswith("CPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(SystemExit, match="CUDA is not available on this machine"):
        _device.device_of(_args("cuda"))
    with pytest.raises(SystemExit, match="only cpu and cuda"):
        _device.device_of(_args("meta"))
    with pytest.raises(SystemExit, match="--device 'gpu7'"):
        _device.device_of(_args("gpu7"))


def test_on_cuda_the_clock_waits_for_the_device(monkeypatch):
    """The CUDA branch with the device answered: ``timed`` synchronises before and after."""
    waits: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", waits.append)
    device = _device.device_of(_args("cuda:1"))
    assert device == torch.device("cuda:1")
    _device.timed(device, lambda: None)
    assert waits == [device, device]
