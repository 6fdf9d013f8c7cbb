"""A microscope build: the top-9 projections of every map of one layer over a photo folder.

What OpenAI Microscope and DeepVis show for a unit is its top images and their
projections; this measures what building that costs for *every* map of a layer: the
top-k scan (``deconvnet.topk.scan``) and the projection stage (``deconvnet.topk.project``,
one reverse pass per projection), against the peer one would reach for otherwise, a loop
of Captum ``NeuronDeconvolution`` calls, one per unit (forward and backward each), on the
same units. Rows: a ResNet-50 in torchvision's layout at ``layer3`` (1,024 maps; seeded
weights, calibrated BatchNorm, ``tests/_torchvision.py``) and the real SqueezeNet v1.0
(deep-compression weights) at ``fire9`` (512 maps), over the 200 ImageNet sample photos.

Captum takes about a second per ResNet-50 unit here, so it runs on a sample of
``--captum-units`` units spread over the index (half before our projection stage, half
after it, so that machine noise hits both sides), and its loop over all the units is
extrapolated as the sample's mean seconds per unit times the number of units; each sampled
unit's output is compared with ours (the projection inside its receptive-field box, Captum
seeding 1 where we seed the activation). ``--precision float32 bfloat16`` adds our
reduced-precision reverse pass, every projection of it checked display-exact against our
float32 one (:func:`deconvnet.figures.display.display_match`: PSNR of the 8-bit rendering,
share of pixels within ±2 levels; the engine's float32 redos counted). Wall times and load
averages are printed at every stage; the machine is shared, so compare sides of one run.
``docs/scaling.md`` carries the results over to ImageNet val.

    python benchmarks/bench_microscope.py [--rows resnet50 squeezenet] [--images 200]
        [--maps all] [--captum-units 24] [--threads 2] [--precision float32 bfloat16]
        [--device cpu]

Results on the 2-core development machine, and what they mean for ImageNet val:
``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, synchronize

from deconvnet import models, topk
from deconvnet.engine.precision import FULL_PRECISION
from deconvnet.figures.display import DisplayMatch, display_match
from deconvnet.inputs import datasets
from deconvnet.inputs.images import load_image, preprocess
from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION, Preprocessing
from deconvnet.instruments.topk.project import projection_runs
from tests import _torchvision as tv

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
K = 9
BATCH_SIZE = 25
TOLERANCE = 1e-3
"""Largest difference from Captum, relative to the largest value of Captum's projection
(float32; ours runs 8 images per forward pass and many units per reverse batch)."""


@dataclass(frozen=True)
class Row:
    name: str
    layer: str
    build: Callable[[], tuple[nn.Module, Preprocessing]]


def resnet50() -> tuple[nn.Module, Preprocessing]:
    return tv.calibrated(tv.resnet50()), IMAGENET_TORCHVISION


def squeezenet() -> tuple[nn.Module, Preprocessing]:
    model = models.load("squeezenet1_0", weights="deep-compression")
    return model, model.preprocessing


ROWS = {
    "resnet50": Row("ResNet-50 (torchvision layout)", "layer3", resnet50),
    "squeezenet": Row("SqueezeNet v1.0 deep-compression", "fire9", squeezenet),
}


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def captum_units(
    model: nn.Module,
    layer: str,
    data: datasets.ImageDataset,
    index: topk.TopKIndex,
    found: Mapping[tuple[str, int, int], topk.ProjectedEntry],
    keys: list[tuple[str, int, int]],
    device: torch.device,
) -> tuple[float, float, float]:
    """Captum ``NeuronDeconvolution`` once per unit of ``keys`` (its image read and
    preprocessed each time, as a loop would); returns wall and CPU seconds per unit and the
    largest difference from our projection, relative to Captum's largest value."""
    from captum.attr import NeuronDeconvolution

    # Captum's backward hooks refuse in-place ReLUs; the values are the same either way
    peer = tv.no_inplace(copy.deepcopy(model))
    attribution = NeuronDeconvolution(peer, peer.get_submodule(layer))
    worst = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in keys:
            item = found[key]
            entry = item.entry
            x = preprocess(load_image(index.names[entry.image_id]), data.preprocessing, device)
            grad = attribution.attribute(x, neuron_selector=(entry.channel, *entry.position))
            expected = grad[0].detach().cpu() * item.value  # Captum seeds 1, we the activation
            if data.preprocessing.channel_order == "BGR":
                expected = expected.flip(0)
            top, left, bottom, right = item.crop_box
            inside = expected[:, top:bottom, left:right]
            outside = expected.clone()
            outside[:, top:bottom, left:right] = 0
            scale = float(expected.abs().max())
            error = max(
                float((item.projection - inside).abs().max()), float(outside.abs().max())
            ) / max(scale, 1e-30)
            worst = max(worst, error)
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    return wall / len(keys), used / len(keys), worst


def sample(keys: list[tuple[str, int, int]], count: int) -> list[tuple[str, int, int]]:
    """``count`` keys spread evenly over ``keys`` (every map's ranks alike)."""
    step = max(1, len(keys) // max(count, 1))
    return keys[::step][:count]


@dataclass
class Stage:
    """One precision's projection stage, summed over its runs."""

    wall: float = 0.0
    cpu: float = 0.0
    projections: int = 0
    reverse: int = 0
    forward: int = 0
    redone: int = 0
    checked: list[DisplayMatch] = field(default_factory=list)


def project_runs(
    index: topk.TopKIndex,
    model: nn.Module,
    data: datasets.ImageDataset,
    precision: str,
    device: torch.device,
    full: dict[tuple[str, int, int], topk.ProjectedEntry],
) -> Stage:
    """The projection stage one run of images at a time (``image_ids``: the share a rank
    would take; each call traces its receptive fields again, counted against us). A
    float32 stage's projections are kept in ``full``; a reduced one's are checked against
    them run by run and dropped, so that the two sets of every map's projections are never
    held at once (ResNet-50 ``layer3``: 5.5 GB each in float32)."""
    stage = Stage()
    for ids in projection_runs(index):
        synchronize(device)
        start, cpu = time.perf_counter(), time.process_time()
        found = topk.project(
            index, model, data, device=device, max_work=None, precision=precision, image_ids=ids
        )
        synchronize(device)
        stage.wall += time.perf_counter() - start
        stage.cpu += time.process_time() - cpu
        stage.projections += len(found)
        stage.reverse += found.reverse_passes
        stage.forward += found.forward_images
        stage.redone += sum(1 for item in found.values() if item.precision != precision)
        if precision == FULL_PRECISION:
            full.update(found)
        else:
            stage.checked += [
                display_match(item.projection, full[key].projection) for key, item in found.items()
            ]
    return stage


def display_line(precision: str, stage: Stage) -> str:
    """What the display check found over every reduced-precision projection."""
    failed = sum(1 for match in stage.checked if not match.passed)
    worst_psnr = min(match.psnr for match in stage.checked)
    return (
        f"{precision} against float32, {len(stage.checked)} projections: worst PSNR "
        + ("inf (all identical)" if math.isinf(worst_psnr) else f"{worst_psnr:.1f} dB")
        + f", worst share within ±2 levels {min(m.within for m in stage.checked):.4f}, "
        f"largest relative error {max(m.max_relative_error for m in stage.checked):.1e}; "
        f"{stage.redone} redone in float32 by the engine; {failed} failed the display check"
    )


def run_row(row: Row, args: argparse.Namespace, device: torch.device) -> None:
    model, preprocessing = row.build()
    model = model.eval().to(device)
    data = datasets.open_dataset(PHOTOS, preprocessing)
    ids = range(min(args.images, len(data)))
    print(f"\n## {row.name} `{row.layer}`, {len(ids)} photos, k = {K}, maps {args.maps}")
    print(f"scan: {load()}", flush=True)
    start = time.perf_counter()
    cpu = time.process_time()
    index = topk.scan(
        model, data, [row.layer], k=K, maps=args.maps, batch_size=BATCH_SIZE, image_ids=ids,
        device=device,
    )  # fmt: skip
    scan_s, scan_cpu = time.perf_counter() - start, time.process_time() - cpu
    layer = index.layers[0]
    print(
        f"  {scan_s:.1f} s wall ({len(ids) / scan_s:.1f} img/s), {scan_cpu:.1f} s CPU; "
        f"{len(index.state.layers[layer].channels)} maps; {load()}",
        flush=True,
    )
    keys = sorted((entry.layer, entry.channel, entry.rank) for entry in index.state.entries())
    picked = sample(keys, args.captum_units)
    first, second = picked[: len(picked) // 2], picked[len(picked) // 2 :]
    full: dict[tuple[str, int, int], topk.ProjectedEntry] = {}
    stages: dict[str, Stage] = {}
    captum_times: list[tuple[float, float, int]] = []

    def peer(part: list[tuple[str, int, int]], when: str) -> None:
        wall, used, error = captum_units(model, layer, data, index, full, part, device)
        captum_times.append((wall, used, len(part)))
        print(
            f"Captum, {len(part)} units {when}: {wall:.3f} s/unit wall, {used:.3f} s CPU, "
            f"largest difference from ours {error:.1e}; {load()}",
            flush=True,
        )
        if error > TOLERANCE:
            raise SystemExit(f"{row.name}: ours and Captum differ by {error:.1e}")

    # float32 first: the reduced precisions are checked against it
    for precision in [FULL_PRECISION, *(p for p in args.precision if p != FULL_PRECISION)]:
        print(f"ours, {precision}: projecting {len(keys)} units; {load()}", flush=True)
        stage = stages[precision] = project_runs(index, model, data, precision, device, full)
        print(
            f"  {stage.wall:.1f} s wall, {stage.cpu:.1f} s CPU: "
            f"{stage.projections / stage.wall:.1f} projections/s, {stage.reverse} reverse "
            f"passes for {stage.projections} projections, {stage.forward} images through a "
            f"forward pass; {load()}",
            flush=True,
        )
        if precision == FULL_PRECISION:
            if first:
                peer(first, "before")
        else:
            print(display_line(precision, stage), flush=True)
            if any(not match.passed for match in stage.checked):
                raise SystemExit(f"{row.name}: {precision} projections not display-exact")
    if second:
        peer(second, "after")
    units = len(full)
    counted = max(1, sum(n for _, _, n in captum_times))
    peer_wall = sum(w * n for w, _, n in captum_times) / counted * units
    peer_cpu = sum(c * n for _, c, n in captum_times) / counted * units
    print(f"\n{row.name} `{row.layer}`, {len(ids)} photos, {units} projections; wall s (CPU s)")
    print(
        "| precision | scan | ours: projection stage | projections/s | Captum loop, "
        "extrapolated | projections/s | ratio | scan + projections: ours / with Captum |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for precision, stage in stages.items():
        wall, used = stage.wall, stage.cpu
        print(
            f"| {precision} | {scan_s:.1f} ({scan_cpu:.1f}) | {wall:.1f} ({used:.1f}) | "
            f"{units / wall:.1f} ({units / used:.1f}) | {peer_wall:.0f} ({peer_cpu:.0f}) | "
            f"{units / peer_wall:.2f} ({units / peer_cpu:.2f}) | "
            f"{peer_wall / wall:.1f}× ({peer_cpu / used:.1f}×) | "
            f"{scan_s + wall:.0f} / {scan_s + peer_wall:.0f} s "
            f"({(scan_cpu + peer_cpu) / (scan_cpu + used):.1f}× CPU) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--maps", default="all", help="all, N or random:N")
    parser.add_argument("--captum-units", type=int, default=24)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--precision", nargs="+", default=["float32", "bfloat16"],
        choices=["float32", "bfloat16", "float16"],
    )  # fmt: skip
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = device_of(args)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), device {device}; top-{K} of "
        f"every map; Captum on {args.captum_units} units per row, extrapolated"
    )
    for name in args.rows:
        run_row(ROWS[name], args, device)


if __name__ == "__main__":
    main()
