"""Engine benchmark on graphs: ResNet-18/50, VGG16-BN, DenseNet-121 and CaffeNet vs Captum.

Each row: ``TopMaps(16)`` at one layer, one 224×224 float32 image (227 for CaffeNet),
random seeded weights with calibrated BatchNorm statistics (``tests/_torchvision.py``),
against Captum ``NeuronDeconvolution`` called once per map at the same units (inputs where
Captum is exact: ``nn.ReLU`` modules, not in place, on both sides). Ours and Captum's take
turns for ``--rounds`` rounds in this process, after one untimed warm-up each, denormals
flushed; outputs are asserted equal. Also printed: multiply-accumulates of the cropped
reverse pass per seed against the full one (autograd's input gradient of one unit), counted
by ``torch.utils.flop_counter`` (which also counts our average-pool transposes, done as
convolutions with a kernel of ones, and not autograd's), and the achieved GMAC/s of our
whole call against the plain forward's.

    python benchmarks/bench_graphs.py [--threads 1 2] [--rounds 3] [--rows resnet18 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import deconvnet as dn
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


def row(name: str, layer: str, model: nn.Module, x: torch.Tensor, rounds: int) -> str:
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
        start = time.perf_counter()
        net.layer_output(x, layer)
        forward_time = time.perf_counter() - start
    total = gmac(lambda: ours(model, x, layer))
    cropped = (total - forward) / MAPS
    full = full_reverse(model, x, layer)
    ratios = [p / o for o, p in zip(times_ours, times_peer, strict=True)]
    return (
        f"| {name} `{layer}` | {torch.get_num_threads()} | {_span(times_ours)} | "
        f"{_span(times_peer)} | {min(ratios):.2f}–{max(ratios):.2f}× | "
        f"{cropped:.2f} / {full:.2f} ({cropped / full:.0%}) | "
        f"{total / min(times_ours):.0f} / {forward / forward_time:.0f} | {error:.1e} |"
    )


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}; TopMaps({MAPS}), 1 image, float32, {args.rounds} rounds")
    print(
        "| case | threads | ours (s) | Captum, 16 calls (s) | ratio | "
        "GMAC per seed: cropped / full | GMAC/s: ours / plain forward | max rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.rows:
        model, x = build(name)
        for layer in ROWS[name][2]:
            for threads in args.threads:
                torch.set_num_threads(threads)
                print(row(name, layer, model, x, args.rounds), flush=True)


if __name__ == "__main__":
    main()
