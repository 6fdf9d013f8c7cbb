"""Engine benchmark on graphs: ResNet-18/50, VGG16-BN, DenseNet-121 and CaffeNet vs Captum.

Each row: ``TopMaps(16)`` at one layer, one 224×224 float32 image (227 for CaffeNet),
random seeded weights with calibrated BatchNorm statistics (``tests/_torchvision.py``),
against Captum ``NeuronDeconvolution`` called once per map at the same units (inputs where
Captum is exact: ``nn.ReLU`` modules, not in place, on both sides). Ours and Captum's take
turns for ``--rounds`` rounds in this process, after one untimed warm-up each, denormals
flushed; outputs are asserted equal. Also printed: multiply-accumulates of the cropped
reverse pass per seed against the full one (autograd's input gradient of one unit), counted
by ``torch.utils.flop_counter`` (which also counts our average-pool transposes, done as
convolutions with a kernel of ones, and not autograd's), the achieved GMAC/s of our
whole call against the plain forward's, and the **bound**: the ratio we would reach if our
whole call ran at the fastest rate this machine's convolution and matrix kernels reach
(measured in the same run): Captum's time × that rate / our GMAC. No exact windowed pass
can beat it, since every multiply-accumulate it counts is needed.

``--kernels`` adds, per row, the time of the transposed convolutions of one call in the
formulation :func:`deconvnet.engine.ops.convolution.transposed_conv` picks against the library's
``F.conv_transpose2d`` for every one of them (same shapes, timed here in turns).

    python benchmarks/bench_graphs.py [--threads 1 2] [--rounds 3] [--rows resnet18 ...]
        [--kernels]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import deconvnet as dn
from deconvnet.engine.ops import convolution
from tests import _nets
from tests import _torchvision as tv

MAPS = 16
TOLERANCE = 1e-4
ROWS: dict[str, tuple[Callable[[], nn.Module], int, list[str]]] = {
    "resnet18": (tv.resnet18, 224, ["layer3", "layer4"]),
    "resnet50": (tv.resnet50, 224, ["layer3", "layer4"]),
    "vgg16_bn": (tv.vgg16_bn, 224, ["features.22", "features.42"]),
    "densenet121": (tv.densenet121, 224, ["features.denseblock3", "features.denseblock4"]),
    "caffenet": (lambda: _nets.caffenet(), 227, ["9", "13"]),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    factory, size, _ = ROWS[name]
    model = factory()
    model = model if name == "caffenet" else tv.calibrated(model)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return tv.no_inplace(model).eval(), x


def ours(model: nn.Module, x: torch.Tensor, layer: str) -> dn.Projection:
    with dn.Deconvnet(model, lrn="gradient") as net:  # CaffeNet's LRN: Captum's gradient
        return net.project(x, layer, dn.TopMaps(MAPS))


def captum(model: nn.Module, x: torch.Tensor, layer: str, found: dn.Projection) -> torch.Tensor:
    from captum.attr import NeuronDeconvolution

    attribution = NeuronDeconvolution(model, model.get_submodule(layer))
    outputs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert found.positions is not None
        for k in range(MAPS):
            neuron = (int(found.channels[0, k]), *(int(p) for p in found.positions[0, k]))
            grad = attribution.attribute(x, neuron_selector=neuron)
            outputs.append(grad[0] * found.values[0, k])  # Captum seeds with 1, we with y
    return torch.stack(outputs)


def gmac(run: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 2e9


class _Stop(Exception):
    pass


def full_reverse(model: nn.Module, x: torch.Tensor, layer: str) -> float:
    """GMAC of one uncropped reverse pass: autograd's input gradient of one unit."""
    captured: list[torch.Tensor] = []

    def stop(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        captured.append(output)
        raise _Stop

    handle = model.get_submodule(layer).register_forward_hook(stop)
    inp = x.clone().requires_grad_(True)
    try:
        model(inp)
    except _Stop:
        pass
    finally:
        handle.remove()
    y = captured[0]
    seed = torch.zeros_like(y)
    seed[0, 0, y.shape[2] // 2, y.shape[3] // 2] = 1
    return gmac(lambda: torch.autograd.grad(y, inp, seed))


def peak_rate() -> float:
    """The fastest GMAC/s of this machine's dense kernels at the current thread count: a
    large matrix product and 3×3 convolutions of 16 images (the best of three runs each)."""
    gemm = (torch.randn(2048, 2048), torch.randn(2048, 2048))
    kernels: list[tuple[Callable[[], object], float]] = [(lambda: gemm[0] @ gemm[1], 2048**3 / 1e9)]
    for channels, size in ((256, 14), (512, 14), (128, 28)):
        image = torch.randn(16, channels, size, size)
        weight = torch.randn(channels, channels, 3, 3)
        kernels.append(
            (
                lambda image=image, weight=weight: F.conv2d(image, weight, padding=1),
                16 * channels * channels * 9 * size * size / 1e9,
            )
        )
    best = 0.0
    for run, work in kernels:
        run()
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = max(best, work / (time.perf_counter() - start))
    return best


def kernel_times(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[float, float]:
    """Seconds of one call's transposed convolutions: as picked, and all by the library."""
    calls: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int], int, tuple[int, int]]] = []
    picked = convolution.transposed_conv

    def spy(
        data: torch.Tensor,
        weight: torch.Tensor,
        stride: tuple[int, int],
        groups: int = 1,
        dilation: tuple[int, int] = (1, 1),
    ) -> torch.Tensor:
        calls.append((data, weight, stride, groups, dilation))
        return picked(data, weight, stride, groups, dilation)

    convolution.transposed_conv = spy
    try:
        ours(model, x, layer)
    finally:
        convolution.transposed_conv = picked
    chosen = library = 0.0
    for data, weight, stride, groups, dilation in calls:
        for _ in range(2):  # the second of each: warm
            start = time.perf_counter()
            picked(data, weight, stride, groups, dilation)
            middle = time.perf_counter()
            F.conv_transpose2d(data, weight, None, stride, 0, 0, groups, dilation)
            end = time.perf_counter()
        chosen += middle - start
        library += end - middle
    return chosen, library


def row(
    name: str,
    layer: str,
    model: nn.Module,
    x: torch.Tensor,
    rounds: int,
    peak: float,
    kernels: bool,
) -> str:
    found = ours(model, x, layer)  # warm-up, untimed (both sides)
    captum(model, x, layer, found)
    times_ours, times_peer = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        found = ours(model, x, layer)
        times_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        expected = captum(model, x, layer, found)
        times_peer.append(time.perf_counter() - start)
    error = float((found.images[0] - expected).abs().max() / expected.abs().max())
    if error > TOLERANCE:
        raise SystemExit(f"{name} {layer}: outputs differ, relative error {error:.2e}")
    with dn.Deconvnet(model) as net:
        forward = gmac(lambda: net.layer_output(x, layer))
        forward_time = math.inf
        for _ in range(3):
            start = time.perf_counter()
            net.layer_output(x, layer)
            forward_time = min(forward_time, time.perf_counter() - start)
    total = gmac(lambda: ours(model, x, layer))
    cropped = (total - forward) / MAPS
    full = full_reverse(model, x, layer)
    ratios = [p / o for o, p in zip(times_ours, times_peer, strict=True)]
    bound = min(times_peer) * peak / total
    line = (
        f"| {name} `{layer}` | {torch.get_num_threads()} | {_span(times_ours)} | "
        f"{_span(times_peer)} | {min(ratios):.2f}–{max(ratios):.2f}× | {bound:.1f}× | "
        f"{cropped:.2f} / {full:.2f} ({cropped / full:.0%}) | "
        f"{total / min(times_ours):.0f} / {forward / forward_time:.0f} / {peak:.0f} | "
        f"{error:.1e} |"
    )
    if kernels:
        chosen, library = kernel_times(model, x, layer)
        line += f" {chosen:.2f} / {library:.2f} |"
    return line


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument(
        "--kernels", action="store_true", help="also time the transposed convolutions"
    )
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    peaks = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        peaks[threads] = peak_rate()
    print(f"torch {torch.__version__}; TopMaps({MAPS}), 1 image, float32, {args.rounds} rounds")
    print(
        "| case | threads | ours (s) | Captum, 16 calls (s) | ratio | bound | "
        "GMAC per seed: cropped / full | GMAC/s: ours / plain forward / peak | max rel. diff |"
        + (" transposed convs (s): picked / library |" if args.kernels else "")
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.kernels else ""))
    for name in args.rows:
        model, x = build(name)
        for layer in ROWS[name][2]:
            for threads in args.threads:
                torch.set_num_threads(threads)
                line = row(name, layer, model, x, args.rounds, peaks[threads], args.kernels)
                print(line, flush=True)


if __name__ == "__main__":
    main()
