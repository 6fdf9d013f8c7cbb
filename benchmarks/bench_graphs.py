"""Engine benchmark on graphs: ResNet-18/50, VGG16-BN, DenseNet-121 and CaffeNet vs Captum,
in full precision and in reduced precision, side by side.

Each row: ``TopMaps(16)`` at one layer, one 224×224 image (227 for CaffeNet), random seeded
weights with calibrated BatchNorm statistics (``tests/_torchvision.py``), against Captum
``NeuronDeconvolution`` in float32, called once per map at the same units (inputs where
Captum is exact: ``nn.ReLU`` modules, not in place, on both sides). Ours in each
``--precision`` and Captum's take turns for ``--rounds`` rounds in this process, after one
untimed warm-up each, denormals flushed. Outputs are compared: ours in float32 against
Captum's (asserted equal), ours in a reduced precision against ours in float32 with the
display-exact check on every projection (PSNR of the 8-bit rendering ≥ 40 dB and ≥ 99 % of
pixels within ±2 levels; the worst PSNR and share, the largest relative error and the
projections the engine redid in float32 are printed).

Also printed: multiply-accumulates of the cropped reverse pass per seed against the full
one (autograd's input gradient of one unit), counted by ``torch.utils.flop_counter``; the
achieved GMAC/s of our whole call (forward + reverse) in each precision against the peak of
this machine's dense kernels in that precision, measured in the same run (a 2048² matrix
product and 3×3 convolutions of 16 images), and the plain forward's (the library's own
kernels on these shapes); and per precision the **bound**: the ratio we would reach if
our whole call ran at the peak — the forward (always float32) at float32's, the reverse at
its precision's: Captum's time ÷ (forward GMAC / float32 peak + reverse GMAC / peak). No
pass in that precision can beat it, since every multiply-accumulate it counts is needed;
"of bound" is the median round's ratio over it. The 1-minute load average of the machine before each
row is printed with it: on a shared machine, read the ratios, measured in turns.

Per precision also the **kernels' floor**: Captum's median time ÷ (the plain forward + the
transposed convolutions of one call, each timed alone in the formulation the engine picks)
— the ratio a pass would reach if nothing but those kernels ran (no rectification, sums,
unpooling, rounding estimate or Python), with its share of the bound: where it is below a
target, these kernels cannot meet it on this machine.

Targets (issue 26): reduced precision ≥ 5× Captum (float32) on every row, float32 ≥ 75 % of
its bound, both by the median round; the last lines say which rows miss which.

``--kernels`` adds, per row and precision, the time of the transposed convolutions of one
call in the formulation :func:`deconvnet.engine.ops.convolution.transposed_conv` picks
against the library's ``F.conv_transpose2d`` for every one of them (same shapes).
``--device cuda`` runs both sides on the GPU (reduced precision on its kernels).

    python benchmarks/bench_graphs.py [--threads 1 2] [--rounds 3] [--rows resnet18 ...]
        [--precision float32 bfloat16] [--kernels] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, describe, device_of, synchronize, timed

import deconvnet as dn
from deconvnet.engine.ops import convolution
from deconvnet.engine.precision import PRECISIONS, dtype_name, reverse_dtype
from deconvnet.figures.display import DisplayMatch, display_matches
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


def build(name: str, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    factory, size, _ = ROWS[name]
    model = factory()
    model = model if name == "caffenet" else tv.calibrated(model)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return tv.no_inplace(model).eval().to(device), x.to(device)


def ours(model: nn.Module, x: torch.Tensor, layer: str, precision: str) -> dn.Projection:
    # CaffeNet's LRN by its gradient: Captum's
    with dn.Deconvnet(model, lrn="gradient", precision=precision) as net:
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


def peak_rate(dtype: torch.dtype, device: torch.device) -> float:
    """The fastest GMAC/s of this machine's dense kernels in ``dtype`` at the current thread
    count: a large matrix product and 3×3 convolutions of 16 images (best of three each)."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    gemm = (tensor(2048, 2048), tensor(2048, 2048))
    kernels: list[tuple[Callable[[], object], float]] = [(lambda: gemm[0] @ gemm[1], 2048**3 / 1e9)]
    for channels, size in ((256, 14), (512, 14), (128, 28)):
        image, weight = tensor(16, channels, size, size), tensor(channels, channels, 3, 3)
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
            seconds, _ = timed(device, run)
            best = max(best, work / seconds)
    return best


TransposedCall = tuple[torch.Tensor, torch.Tensor, tuple[int, int], int, tuple[int, int]]


def transposed_calls(
    model: nn.Module, x: torch.Tensor, layer: str, precision: str
) -> list[TransposedCall]:
    """The transposed convolutions of one call: their inputs, filters and geometry."""
    calls: list[TransposedCall] = []
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
        ours(model, x, layer, precision)
    finally:
        convolution.transposed_conv = picked
    return calls


def kernel_seconds(
    calls: list[TransposedCall], formulation: Callable[..., torch.Tensor], device: torch.device
) -> float:
    """Seconds of ``calls`` in ``formulation``, each timed warm (its second run)."""
    total = 0.0
    for data, weight, stride, groups, dilation in calls:
        run = partial(formulation, data, weight, stride, groups, dilation)
        timed(device, run)
        total += timed(device, run)[0]
    return total


def _library(
    data: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    groups: int,
    dilation: tuple[int, int],
) -> torch.Tensor:
    return F.conv_transpose2d(data, weight, None, stride, 0, 0, groups, dilation)


@dataclass
class Row:
    """One layer at one thread count: what is printed, and whether it meets the targets."""

    line: str
    misses: list[str]


def row(
    name: str,
    layer: str,
    model: nn.Module,
    x: torch.Tensor,
    rounds: int,
    peaks: dict[str, float],
    precisions: list[str],
    kernels: bool,
) -> Row:
    device = x.device
    load = os.getloadavg()[0]
    found = {p: ours(model, x, layer, p) for p in precisions}  # warm-up, untimed (both sides)
    captum(model, x, layer, found[precisions[0]])
    times: dict[str, list[float]] = {p: [] for p in precisions}
    times_peer = []
    for _ in range(rounds):
        for precision in precisions:
            seconds, found[precision] = timed(
                device, lambda precision=precision: ours(model, x, layer, precision)
            )
            times[precision].append(seconds)
        seconds, expected = timed(device, lambda: captum(model, x, layer, found[precisions[0]]))
        times_peer.append(seconds)
    full = found["float32"] if "float32" in precisions else ours(model, x, layer, "float32")
    error = float((full.images[0] - expected).abs().max() / expected.abs().max())
    if error > TOLERANCE:
        raise SystemExit(
            f"{name} {layer}: outputs differ from Captum's, relative error {error:.2e}"
        )
    with dn.Deconvnet(model) as net:
        forward = gmac(lambda: net.layer_output(x, layer))
        forward_time = min(timed(device, lambda: net.layer_output(x, layer))[0] for _ in range(3))
    total = gmac(lambda: ours(model, x, layer, "float32"))
    cropped = (total - forward) / MAPS
    full_gmac = full_reverse(model, x, layer)
    cells = [
        f"{name} `{layer}`",
        str(torch.get_num_threads()),
        f"{load:.1f}",
        _span(times_peer),
    ]
    checks, misses, floors, kernel_cells = [], [], [], []
    for precision in precisions:
        calls = transposed_calls(model, x, layer, precision)
        picked = kernel_seconds(calls, convolution.transposed_conv, device)
        floor = statistics.median(times_peer) / (forward_time + picked)
        if kernels:
            kernel_cells.append(f"{picked:.2f} / {kernel_seconds(calls, _library, device):.2f}")
        ratio = [p / o for o, p in zip(times[precision], times_peer, strict=True)]
        median = statistics.median(ratio)
        ran = found[precision].precision
        peak = peaks.get(ran, peaks["float32"])
        # the forward runs in float32 whatever the precision; the reverse in its own type
        at_peak = forward / peaks["float32"] + (total - forward) / peak
        bound = min(times_peer) / at_peak
        cells += [
            _span(times[precision]),
            f"{min(ratio):.1f}–{max(ratio):.1f}×",
            f"{bound:.1f}×",
            f"{median / bound:.0%}",
            f"{total / min(times[precision]):.0f} / {peak:.0f}",
        ]
        floors.append(f"{floor:.1f}× ({floor / bound:.0%})")
        if precision == "float32":
            if median < FULL_OF_BOUND * bound:
                misses.append(
                    f"float32 at {median / bound:.0%} of its bound "
                    f"(the kernels' floor: {floor / bound:.0%})"
                )
        else:
            check = _check(found[precision], full)
            checks.append(f"{ran}: {check}")
            if median < REDUCED_RATIO:
                misses.append(
                    f"{ran} at {median:.1f}× Captum (its bound: {bound:.1f}×, "
                    f"the kernels' floor: {floor:.1f}×)"
                )
            if not check.startswith("pass"):
                misses.append(f"{ran} not display-exact")
    cells.append(f"{forward / forward_time:.0f}")
    cells.append("; ".join(checks) or "—")
    cells.append(f"{cropped:.2f} / {full_gmac:.2f} ({cropped / full_gmac:.0%})")
    cells.append(f"{error:.1e}")
    cells += floors + kernel_cells
    label = f"{name} {layer} at {torch.get_num_threads()} thread(s)"
    return Row("| " + " | ".join(cells) + " |", [f"{label}: {miss}" for miss in misses])


FULL_OF_BOUND = 0.75
REDUCED_RATIO = 5.0


def _check(reduced: dn.Projection, full: dn.Projection) -> str:
    """The display-exact check on every projection, as one cell."""
    matches: list[DisplayMatch] = display_matches(reduced.images, full.images)
    redone = int(reduced.full_precision.sum()) if reduced.full_precision is not None else 0
    verdict = "pass" if all(m.passed for m in matches) else "FAIL"
    worst = min(m.psnr for m in matches)
    psnr = "inf" if math.isinf(worst) else f"{worst:.1f} dB"
    return (
        f"{verdict} (PSNR ≥ {psnr}, ±2 levels ≥ {min(m.within for m in matches):.2%}, "
        f"max rel. err. {max(m.max_relative_error for m in matches):.1e}, "
        f"{redone} redone in float32)"
    )


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=PRECISIONS,
        help="the precisions of our side, in this order (Captum is float32)",
    )
    parser.add_argument(
        "--kernels", action="store_true", help="also time the transposed convolutions"
    )
    add_device_argument(parser)
    args = parser.parse_args()
    device = device_of(args)
    torch.set_flush_denormal(True)
    peaks: dict[int, dict[str, float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        peaks[threads] = {
            dtype_name(dtype): peak_rate(dtype, device)
            for dtype in {
                torch.float32,
                *(reverse_dtype(p, torch.float32, device) for p in args.precision),
            }
        }
    print(
        f"torch {torch.__version__}; {describe(device)}; TopMaps({MAPS}), 1 image, "
        f"{args.rounds} rounds; peak GMAC/s by threads: {peaks}"
    )
    names = args.precision
    header = ["case", "threads", "load (1 min)", "Captum float32, 16 calls (s)"]
    for p in names:
        header += [f"ours {p} (s)", f"ratio {p}", f"bound {p}", "of bound", f"GMAC/s {p} / peak"]
    header += ["GMAC/s plain forward", "display check (reduced vs float32)"]
    header += ["GMAC per seed: cropped / full", "max rel. diff vs Captum"]
    header += [f"kernels' floor {p} (of bound)" for p in names]
    if args.kernels:
        header += [f"transposed convs {p} (s): picked / library" for p in names]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    misses: list[str] = []
    for name in args.rows:
        model, x = build(name, device)
        for layer in ROWS[name][2]:
            for threads in args.threads:
                torch.set_num_threads(threads)
                result = row(
                    name, layer, model, x, args.rounds, peaks[threads], names, args.kernels
                )
                synchronize(device)
                print(result.line, flush=True)
                misses += result.misses
    print(f"load (1 min) at the end: {os.getloadavg()[0]:.1f}")
    print("targets met on every row" if not misses else "targets missed:\n  " + "\n  ".join(misses))


if __name__ == "__main__":
    main()
