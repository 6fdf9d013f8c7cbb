"""Speed and memory of ``deconvnet.topk``: scan throughput, peak memory, projection time.

Run: ``.venv/bin/python benchmarks/bench_topk.py [--rounds 3] [--workers 1]``.

1. **Scan throughput** against the plain model forward over the same DataLoader (same
   dataset, batch size and workers), SqueezeNet v1.0 (real Caffe weights) over the 200
   ImageNet sample photos, three fire modules, k = 9, all maps. The two take turns in this
   process for ``--rounds`` rounds so that machine noise hits both; the ratio is per round.
2. **Peak memory** of a scan over 200 and 5,000 CIFAR-10 test images (default model, all
   maps of conv1-conv4), each in a fresh subprocess (``ru_maxrss``): it must not grow with N.
3. **Projection time** per projection: ``topk.project`` (one read and one forward pass per
   image for all its layers, one reverse pass per projection, batched) against the engine
   called once per projection (read, preprocess, forward, reverse each time); the stage's
   reverse passes and forward images are counted.

``--device cuda`` runs the models of parts 1 and 3 on the GPU (part 2 measures host
memory, on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, synchronize

from deconvnet import Deconvnet, Neuron, caffe, models, topk
from deconvnet.inputs import datasets
from deconvnet.inputs.datasets import collate_by_size
from deconvnet.inputs.images import load_image, preprocess
from deconvnet.instruments.topk.project import projection_runs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUEEZENET = SHARED / "caffe" / "squeezenet"
PROTOTXT = SQUEEZENET / "squeezenet_v1.0_deploy.prototxt"
CAFFEMODEL = SQUEEZENET / "squeezenet_v1.0.caffemodel"
PHOTOS = SHARED / "imagenet-sample"
CIFAR_TEST = SHARED / "cifar10" / "test"
FIRE_LAYERS = ["fire2/concat", "fire5/concat", "fire9/concat"]
CIFAR_LAYERS = ["features.0", "features.4", "features.8", "features.10"]
K = 9
BATCH_SIZE = 25
MEMORY_SIZES = (200, 5000)
PROJECTION_MAPS = "random:2"
SINGLE_SAMPLE = 96
"""One-engine-call-per-projection runs on at most this many projections, spread evenly."""

_MEMORY_CHILD = """
import json, sys, threading, time
from deconvnet import models, topk
from deconvnet.inputs import datasets

def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
peak, running = [0.0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.005)
count = int(sys.argv[2])
model = models.load("default")
data = datasets.open_dataset(sys.argv[1], model.preprocessing)
layers = ["features.0", "features.4", "features.8", "features.10"]
before = rss_mib()
sampler = threading.Thread(target=sample)
sampler.start()
index = topk.scan(model, data, layers, k=9, batch_size=100, image_ids=range(count))
running[0] = False
sampler.join()
print(json.dumps({"before_mib": before, "peak_mib": peak[0], "seen": index.state.images_seen}))
"""


def plain_forward(model: torch.nn.Module, data: datasets.ImageDataset, workers: int) -> float:
    """Images per second of the model's own forward over the same loader."""
    loader = torch.utils.data.DataLoader(
        data, batch_size=BATCH_SIZE, num_workers=workers, collate_fn=collate_by_size
    )
    device = _device(model)
    start = time.perf_counter()
    count = 0
    with torch.no_grad():
        for batch in loader:
            for _, inputs in batch.groups:
                model(inputs.to(device))
            count += batch.size
    synchronize(device)
    return count / (time.perf_counter() - start)


def scan_rate(model: torch.nn.Module, data: datasets.ImageDataset, workers: int) -> float:
    start = time.perf_counter()
    index = topk.scan(model, data, FIRE_LAYERS, k=K, batch_size=BATCH_SIZE, workers=workers)
    synchronize(_device(model))
    return index.num_images / (time.perf_counter() - start)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def memory(count: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(CIFAR_TEST), str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def projection_times(
    model: torch.nn.Module,
    data: datasets.ImageDataset,
    layers: list[str],
    maps: str,
    image_ids: range | None = None,
) -> dict[str, float]:
    """Wall and CPU seconds per projection of batched ``topk.project`` and of the engine
    called once per projection (on up to :data:`SINGLE_SAMPLE` projections spread over the
    index, half before and half after the batched run); the number of projections, of
    ranked images, of the stage's reverse passes and of its images through a forward pass."""
    index = topk.scan(
        model, data, layers, k=K, maps=maps, batch_size=BATCH_SIZE, image_ids=image_ids
    )
    entries = list(index.state.entries())
    picked = entries[:: max(1, len(entries) // SINGLE_SAMPLE)][:SINGLE_SAMPLE]
    device = _device(model)
    topk.project(index, model, data, image_ids=projection_runs(index)[0])  # warm-up
    with Deconvnet(model) as net:

        def single(part: list[topk.Entry]) -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for entry in part:
                raw = load_image(index.names[entry.image_id])
                x = preprocess(raw, data.preprocessing, device)
                net.project(x, entry.layer, Neuron(entry.channel, *entry.position))
            synchronize(device)
            return time.perf_counter() - start, time.process_time() - cpu

        half = len(picked) // 2
        before = single(picked[:half])
        start, cpu = time.perf_counter(), time.process_time()
        found = topk.project(index, model, data)
        synchronize(device)
        batched = time.perf_counter() - start, time.process_time() - cpu
        after = single(picked[half:])
    return {
        "projections": len(entries),
        "images": len({e.image_id for e in entries}),
        "reverse": found.reverse_passes,
        "forward": found.forward_images,
        "sampled": len(picked),
        "topk_wall": batched[0] / len(entries),
        "topk_cpu": batched[1] / len(entries),
        "single_wall": (before[0] + after[0]) / len(picked),
        "single_cpu": (before[1] + after[1]) / len(picked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--projection-only", action="store_true", help="only part 3")
    parser.add_argument(
        "--every-map", action="store_true", help="part 3 also with every map of the fire layers"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = device_of(args)
    model, preprocessing = caffe.load(PROTOTXT, CAFFEMODEL)
    model.to(device)
    data = datasets.open_dataset(PHOTOS, preprocessing)
    if args.projection_only:
        projection_table(model, data, args.every_map)
        return
    if not args.skip_throughput:
        plain_forward(model, data, args.workers)  # warm-up: caches, lazy imports
    rows = []
    for round_number in range(1, 0 if args.skip_throughput else args.rounds + 1):
        plain = plain_forward(model, data, args.workers)
        scanned = scan_rate(model, data, args.workers)
        rows.append((round_number, plain, scanned, scanned / plain))
    print(
        f"scan throughput: SqueezeNet v1.0, {len(data)} photos, {FIRE_LAYERS}, k={K}, "
        f"batch {BATCH_SIZE}, workers {args.workers}"
    )
    print(f"{'round':>5} {'plain img/s':>12} {'scan img/s':>11} {'ratio':>6}")
    for round_number, plain, scanned, ratio in rows:
        print(f"{round_number:>5} {plain:>12.1f} {scanned:>11.1f} {ratio:>6.3f}")
    if rows:
        print(f"median ratio scan/plain: {statistics.median(r[3] for r in rows):.3f}")
    print("\npeak memory: default model, CIFAR-10 test, conv1-conv4 all maps, k=9")
    print(f"{'images':>7} {'RSS before':>11} {'peak RSS':>9} {'growth MiB':>11}")
    for count in MEMORY_SIZES:
        numbers = memory(count)
        growth = numbers["peak_mib"] - numbers["before_mib"]
        print(
            f"{count:>7} {numbers['before_mib']:>11.1f} {numbers['peak_mib']:>9.1f} {growth:>11.1f}"
        )
    projection_table(model, data, args.every_map)


def projection_table(
    model: torch.nn.Module, data: datasets.ImageDataset, every_map: bool = False
) -> None:
    default = models.load("default").to(_device(model))
    cifar = datasets.open_dataset(CIFAR_TEST, default.preprocessing)
    cases = [
        ("SqueezeNet, 200 photos", model, data, FIRE_LAYERS, PROJECTION_MAPS, None),
        ("SqueezeNet, 200 photos", model, data, FIRE_LAYERS, "random:16", None),
        ("default, 1000 CIFAR", default, cifar, CIFAR_LAYERS, "random:16", range(1000)),
    ]
    if every_map:
        cases.insert(2, ("SqueezeNet, 200 photos", model, data, FIRE_LAYERS, "all", None))
    print(
        f"\nprojection stage, k={K}, {torch.get_num_threads()} thread(s): ms per projection, "
        f"wall (CPU); single: one engine call per projection, on up to {SINGLE_SAMPLE} of them"
    )
    print(
        f"{'case':<24} {'maps':>9} {'proj':>5} {'images':>6} {'reverse':>7} {'forward':>7} "
        f"{'topk':>13} {'single':>13} {'x':>11} load"
    )
    for label, net, dataset, layers, maps, ids in cases:
        row = projection_times(net, dataset, layers, maps, ids)
        topk_ms = f"{row['topk_wall'] * 1000:.1f} ({row['topk_cpu'] * 1000:.1f})"
        single_ms = f"{row['single_wall'] * 1000:.1f} ({row['single_cpu'] * 1000:.1f})"
        wall, cpu = row["single_wall"] / row["topk_wall"], row["single_cpu"] / row["topk_cpu"]
        ratio = f"{wall:.2f} ({cpu:.2f})"
        print(
            f"{label:<24} {maps:>9} {row['projections']:>5} {row['images']:>6} "
            f"{row['reverse']:>7} {row['forward']:>7} {topk_ms:>13} {single_ms:>13} "
            f"{ratio:>11} {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    print(
        "reverse: the stage's reverse passes (one per projection); forward: images through "
        "its forward passes (each ranked image once, for all its layers)"
    )


if __name__ == "__main__":
    main()
