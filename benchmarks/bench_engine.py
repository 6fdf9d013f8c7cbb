"""Engine benchmark: CaffeNet layout, seeded random weights, one 227×227 input.

Tasks: (i) all 256 conv5 maps, MapMax each; (ii) TopMaps(9) at conv2, conv3, pool5.
Peer: Captum NeuronDeconvolution, called once per map on the same model and input; its
outputs are asserted equal to ours (same semantics: LRN by its gradient, as Captum does).
Each task runs in a fresh subprocess so its peak RSS is its own; both flush denormals and
make one untimed warm-up call. ``--device cuda`` runs both on the GPU (clocks wait for it).

    python benchmarks/bench_engine.py [--maps 256] [--repeat 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, synchronize

import deconvnet as dn
from tests import _nets

CONV2, CONV3, CONV5, POOL5 = "4", "8", "13", "14"  # ReLU outputs / pool5 in the layout
TOLERANCE = 1e-4


def setup(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    model = _nets.caffenet()
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False  # Captum's backward hooks refuse in-place ReLUs
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    return model.to(device), x.to(device)


def ours(task: str, maps: int, device: torch.device) -> tuple[float, torch.Tensor]:
    model, x = setup(device)
    with dn.Deconvnet(model, lrn="gradient") as net:  # warm-up, untimed (both sides)
        net.project(x, CONV5, dn.TopMaps(1))
    synchronize(device)
    start = time.perf_counter()
    with dn.Deconvnet(model, lrn="gradient") as net:
        if task == "conv5-all":
            result = net.project(x, CONV5, dn.TopMaps(maps)).images[0]
        else:
            result = torch.cat(
                [net.project(x, layer, dn.TopMaps(9)).images[0] for layer in (CONV2, CONV3, POOL5)]
            )
    synchronize(device)
    return time.perf_counter() - start, result.cpu()


def captum(task: str, maps: int, device: torch.device) -> tuple[float, torch.Tensor]:
    from captum.attr import NeuronDeconvolution

    model, x = setup(device)
    with warnings.catch_warnings():  # warm-up, untimed (both sides)
        warnings.simplefilter("ignore")
        NeuronDeconvolution(model, model.get_submodule(CONV5)).attribute(
            x, neuron_selector=(0, 0, 0)
        )
    start = time.perf_counter()
    layers = [CONV5] if task == "conv5-all" else [CONV2, CONV3, POOL5]
    count = maps if task == "conv5-all" else 9
    outputs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in layers:
            module = model.get_submodule(layer)
            with torch.no_grad():
                y = model[: int(layer) + 1](x)[0]
            maxima, flat = y.flatten(1).max(1)
            order = torch.sort(maxima, descending=True, stable=True).indices[:count]
            attribution = NeuronDeconvolution(model, module)
            for channel in order.tolist():
                position = divmod(int(flat[channel]), y.shape[2])
                grad = attribution.attribute(x, neuron_selector=(channel, *position))
                outputs.append(grad[0] * maxima[channel])  # Captum seeds with 1, we with y
    synchronize(device)
    return time.perf_counter() - start, torch.stack(outputs).cpu()


def _worker(  # type: ignore[type-arg]
    kind: str, task: str, maps: int, device: str, path: str, queue: mp.Queue
) -> None:
    torch.manual_seed(0)
    # Both sides flush denormals: Captum's unit seeds otherwise underflow into denormal
    # floats, which are 5-10x slower on CPUs and would flatter our ratio.
    torch.set_flush_denormal(True)
    seconds, result = (ours if kind == "ours" else captum)(task, maps, torch.device(device))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(result, path)
    queue.put((seconds, peak_mib))


def run(kind: str, task: str, maps: int, device: str) -> tuple[float, float, torch.Tensor]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "result.pt")
        process = context.Process(target=_worker, args=(kind, task, maps, device, path, queue))
        process.start()
        seconds, peak = queue.get()
        process.join()
        result = torch.load(path, weights_only=True)
    return seconds, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    add_device_argument(parser)
    args = parser.parse_args()
    device = str(device_of(args))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    print(f"{'task':<24}{'ours (s)':>10}{'Captum (s)':>12}{'ratio':>8}", end="")
    print(f"{'ours MiB':>10}{'Captum MiB':>12}")
    for task, label in (
        ("conv5-all", f"(i) conv5 {args.maps}× MapMax"),
        ("top9", "(ii) top-9 conv2/3/pool5"),
    ):
        for _ in range(args.repeat):
            t_ours, m_ours, r_ours = run("ours", task, args.maps, device)
            t_peer, m_peer, r_peer = run("captum", task, args.maps, device)
            error = float((r_ours - r_peer).abs().max() / r_peer.abs().max())
            if error > TOLERANCE:
                raise SystemExit(f"outputs differ: relative error {error:.2e} > {TOLERANCE}")
            print(
                f"{label:<24}{t_ours:>10.2f}{t_peer:>12.2f}{t_peer / t_ours:>7.2f}×"
                f"{m_ours:>10.0f}{m_peer:>12.0f}   (max rel. diff {error:.1e})"
            )


if __name__ == "__main__":
    main()
