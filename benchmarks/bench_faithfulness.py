"""Time per unit of the faithfulness card and of the optimised image, on 1 and 2 threads.

**Card.** ``deconvnet.instruments.faithfulness.faithfulness_card`` (batched, cropped to the
unit's receptive field, the forward stopping at the layer) against a plain loop doing the
same work the way one writes it with forward hooks: each perturbed image whole, through the
whole network, one at a time. No installable library computes deletion/insertion curves
for a hidden unit (Captum's metrics are infidelity and sensitivity; Quantus' pixel flipping
scores a class output, and installing it here pulls pandas and OpenCV), so the plain loop
is the peer. Both give the same curves (checked to 1e-4 relative).

**Optimised image.** ``deconvnet.instruments.dream.dream`` per unit, one unit at a time and
four together (the default batch). torch-lucent, the PyTorch port of lucid, is the peer one
would want, but its requirements pull torchvision and a CUDA build of torch 2.14 into the
environment; the table gives our times only.

Usage::

    python benchmarks/bench_faithfulness.py                    # default model conv2, conv4
    python benchmarks/bench_faithfulness.py --squeezenet       # + SqueezeNet fire2, fire5
    python benchmarks/bench_faithfulness.py --threads 1 2 --images 3 --steps 256
    python benchmarks/bench_faithfulness.py --device cuda      # both sides on the GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, timed

from deconvnet import models
from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.receptive import receptive_fields
from deconvnet.engine.rules import COMPARED_RULES
from deconvnet.engine.selection import Neuron
from deconvnet.inputs import images
from deconvnet.instruments import faithfulness as faith
from deconvnet.instruments.dream import DreamSettings, dream

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def photos(
    model: nn.Module, count: int, folder: Path, device: torch.device
) -> list[faith.UnitImage]:
    spec = model.preprocessing
    if spec.resize_rule == "none":
        from dataclasses import replace

        spec = replace(spec, resize_rule="exact")
    files = sorted(p for p in folder.rglob("*") if images.is_image_file(p))[:count]
    if not files:
        files = [images.bundled_photo()] * count
    return [
        faith.UnitImage(images.preprocess(images.load_image(f), spec, device), name=f.name)
        for f in files
    ]


def plain_card(
    model: nn.Module, layer: str, channel: int, unit_images, settings
) -> list[np.ndarray]:
    """The deletion/insertion curves, one whole image through the whole network at a time."""
    module = model.get_submodule(layer)
    found = []

    def hook(_: nn.Module, __: object, output: torch.Tensor) -> None:
        found.append(output.detach().clone())

    handle = module.register_forward_hook(hook)
    curves = []
    try:
        for image in unit_images:
            x = image.x
            found.clear()
            with torch.no_grad():
                model(x)
            maps = found[0][0, channel]
            y, x_pos = divmod(int(maps.flatten().argmax()), maps.shape[1])
            field = receptive_fields(model, tuple(x.shape), x.device).get(layer)
            top, left, bottom, right = field.box(y, x_pos, tuple(x.shape[-2:]))
            pixels = (bottom - top) * (right - left)
            tie = torch.randperm(pixels, generator=torch.Generator().manual_seed(settings.seed)).to(
                x.device
            )
            blurred = faith.gaussian_blur(x, settings.sigma_for(tuple(x.shape[-2:])))
            orders = []
            for rule in settings.rules:
                with Deconvnet(model, rule) as net:
                    p = net.project(x, layer, Neuron(channel, y, x_pos)).images[0, 0]
                orders.append(
                    faith.ranked_order(p[:, top:bottom, left:right].abs().sum(0).flatten(), tie)
                )
            for seed in range(settings.random_seeds):
                g = torch.Generator().manual_seed(settings.seed + 1 + seed)
                orders.append(torch.randperm(pixels, generator=g).to(x.device))
            for perturbation in faith.PERTURBATIONS.values():
                baseline = torch.zeros_like(x) if perturbation.baseline == "mean" else blurred
                start, target = (x, baseline) if perturbation.deletes else (baseline, x)
                for order in orders:
                    values = []
                    for step in range(settings.steps + 1):
                        count = (step * pixels + settings.steps // 2) // settings.steps
                        image_now = x.clone()
                        box = start[..., top:bottom, left:right].flatten(2).clone()
                        box[..., order[:count]] = target[..., top:bottom, left:right].flatten(2)[
                            ..., order[:count]
                        ]
                        image_now[..., top:bottom, left:right] = box.view(
                            1, -1, bottom - top, right - left
                        )
                        found.clear()
                        with torch.no_grad():
                            model(image_now)
                        values.append(float(found[0][0, channel, y, x_pos]))
                    curves.append(np.array(values))
    finally:
        handle.remove()
    return curves


def row(
    model: nn.Module,
    layer: str,
    unit_images: list[faith.UnitImage],
    args: argparse.Namespace,
    settings: faith.FaithfulnessSettings,
) -> tuple[str, ...]:
    """One table row: our card, the plain loop (checked equal), dream alone and 4 together."""
    device = unit_images[0].x.device
    warm = faith.FaithfulnessSettings(steps=2, random_seeds=1)
    faith.faithfulness_card(model, layer, 0, unit_images[:1], settings=warm)
    ours, card = timed(
        device,
        lambda: faith.faithfulness_card(
            model, layer, 0, unit_images, settings=settings, max_work=None
        ),
    )
    plain_text, ratio = "–", "–"
    if not args.no_plain:
        plain, curves = timed(device, lambda: plain_card(model, layer, 0, unit_images, settings))
        mine = [
            c
            for image in card.images  # type: ignore[attr-defined]
            for p in faith.PERTURBATIONS
            for c in (*(image.curves[p][r] for r in settings.rules), *image.random_curves[p])
        ]
        for a, b in zip(mine, curves, strict=True):  # type: ignore[call-overload]
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        plain_text, ratio = f"{plain:.2f}", f"{plain / ours:.1f}×"
    steps = DreamSettings(steps=args.steps)
    dream(model, layer, [0], settings=DreamSettings(steps=2), batch_size=1)
    alone, _ = timed(device, lambda: dream(model, layer, [0], settings=steps, batch_size=1))
    units = list(range(args.units))
    together, _ = timed(device, lambda: dream(model, layer, units, settings=steps, batch_size=4))
    return f"{ours:.2f}", plain_text, ratio, f"{alone:.1f}", f"{together / len(units):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=3, help="images per card")
    parser.add_argument("--steps", type=int, default=256, help="optimisation steps")
    parser.add_argument("--units", type=int, default=4, help="units per optimisation timing")
    parser.add_argument("--squeezenet", action="store_true", help="also SqueezeNet fire2/fire5")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain loop")
    add_device_argument(parser)
    args = parser.parse_args()
    device = device_of(args)
    cases = [("default", None, DATA / "cifar10" / "test", ("features.4", "features.10"))]
    if args.squeezenet:
        cases.append(
            (
                "squeezenet1_0",
                "deep-compression",
                DATA / "imagenet-sample",
                ("features.3", "features.7"),
            )
        )
    settings = faith.FaithfulnessSettings(rules=COMPARED_RULES)
    print(
        f"card: {args.images} images per unit, {settings.steps} steps, {settings.random_seeds} "
        f"random seeds, rules {', '.join(settings.rules)}; dream: {args.steps} steps"
    )
    print(
        "| model | layer | threads | card per unit (s) | plain loop (s) | ratio | "
        "dream per unit, alone (s) | dream per unit, 4 together (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, weights, folder, layers in cases:
        model = models.load(name, weights=weights) if weights else models.load(name)
        model.to(device)
        unit_images = photos(model, args.images, folder, device)
        for layer in layers:
            for threads in args.threads:
                torch.set_num_threads(threads)
                cells = row(model, layer, unit_images, args, settings)
                print(f"| {name} | {layer} | {threads} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
