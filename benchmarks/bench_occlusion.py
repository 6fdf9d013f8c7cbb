"""Occlusion speed: ``deconvnet.instruments.occlusion`` (all four Fig. 7 panels) against Captum.

Captum's ``Occlusion`` computes one panel (the class-probability attribution) with the same
window, stride, fill and batch size on the same model and image, in the same run. Our
probability map is also turned into Captum's attribution (each pixel: the mean drop in
probability over the windows covering it) and compared, so the two runs are checked to
compute the same thing.

Usage::

    python benchmarks/bench_occlusion.py                         # SqueezeNet v1.0 (Caffe)
    python benchmarks/bench_occlusion.py --stride 8 --repeats 3
    python benchmarks/bench_occlusion.py --model default         # the embedded CIFAR-10 net
    python benchmarks/bench_occlusion.py --device cuda           # both on the GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, timed

from deconvnet import caffe, models
from deconvnet.inputs import images
from deconvnet.instruments.occlusion import Occluder, occlude

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SQUEEZENET = DATA / "caffe" / "squeezenet"
PHOTO = DATA / "images" / "skimage_chelsea.png"


def load(name: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    rgb = images.load_image(PHOTO if PHOTO.is_file() else images.bundled_photo())
    if name == "squeezenet":
        net, spec = caffe.load(
            SQUEEZENET / "squeezenet_v1.0_deploy.prototxt",
            SQUEEZENET / "squeezenet_v1.0.caffemodel",
        )
        return net.eval(), images.preprocess(rgb, spec), "conv_final"
    model = models.load(name)
    spec = model.preprocessing
    if spec.resize_rule == "none":
        from dataclasses import replace

        spec = replace(spec, resize_rule="exact")
    return model, images.preprocess(rgb, spec), "features.10"


def captum_equivalent(result, height: int, width: int) -> torch.Tensor:
    """Captum's Occlusion attribution rebuilt from our probability map."""
    total = torch.zeros(height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    size = result.occluder.size
    for i, top in enumerate(result.rows.tolist()):
        for j, left in enumerate(result.cols.tolist()):
            drop = result.baseline_probability - float(result.probability[i, j])
            total[top : top + size, left : left + size] += drop
            count[top : top + size, left : left + size] += 1
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="squeezenet", help="squeezenet or a zoo name")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    add_device_argument(parser)
    args = parser.parse_args()
    device = device_of(args)
    from captum.attr import Occlusion

    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, layer = load(args.model)
    model, x = model.to(device), x.to(device)
    height, width = x.shape[-2:]
    options = {"batch_size": args.batch_size}
    if args.size:
        options["size"] = args.size
    if args.stride:
        options["stride"] = args.stride
    occluder = Occluder.for_input(height, width, **options)
    with torch.no_grad():
        target = int(model(x).flatten(1).argmax())

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(batch).flatten(1), dim=1)

    ours_times, captum_times = [], []

    def peer() -> torch.Tensor:
        with torch.no_grad():
            return Occlusion(forward).attribute(
                x,
                sliding_window_shapes=(x.shape[1], occluder.size, occluder.size),
                strides=(x.shape[1], occluder.stride, occluder.stride),
                baselines=0.0,
                target=target,
                perturbations_per_eval=occluder.batch_size,
            )

    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits both
        seconds, result = timed(device, lambda: occlude(model, x, layer, occluder, label=target))
        ours_times.append(seconds)
        seconds, attribution = timed(device, peer)
        captum_times.append(seconds)
    rebuilt = captum_equivalent(result, height, width)
    difference = float((attribution[0, 0].double().cpu() - rebuilt).abs().max())
    ours, theirs = min(ours_times), min(captum_times)
    positions = result.rows.numel() * result.cols.numel()
    print(
        f"model {args.model}, input {height}x{width}, occluder {occluder.size}px stride "
        f"{occluder.stride} ({positions} positions), batch {occluder.batch_size}, "
        f"threads {torch.get_num_threads()}, device {device}, best of {args.repeats}"
    )
    print(f"ours: method {result.method}, spliced at {result.splice_layer}")
    print(f"max |Captum - ours rebuilt as Captum's attribution| = {difference:.2e}")
    print("| ours, 4 panels (s) | Captum, 1 panel (s) | ratio Captum/ours |")
    print("|---:|---:|---:|")
    print(f"| {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
