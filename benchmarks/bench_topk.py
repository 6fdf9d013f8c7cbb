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

from deconvnet import Deconvnet, Neuron, caffe, models, topk
from deconvnet.inputs import datasets
from deconvnet.inputs.datasets import collate_by_size
from deconvnet.inputs.images import load_image, preprocess

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
    start = time.perf_counter()
    count = 0
    with torch.no_grad():
        for batch in loader:
            for _, inputs in batch.groups:
                model(inputs)
            count += batch.size
    return count / (time.perf_counter() - start)


def scan_rate(model: torch.nn.Module, data: datasets.ImageDataset, workers: int) -> float:
    start = time.perf_counter()
    index = topk.scan(model, data, FIRE_LAYERS, k=K, batch_size=BATCH_SIZE, workers=workers)
    return index.num_images / (time.perf_counter() - start)


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
) -> tuple[float, float, int, int, int, int]:
    """Seconds per projection: batched ``topk.project`` and the engine one at a time; the
    number of projections, of ranked images, of the stage's reverse passes and of its
    images through a forward pass."""
    index = topk.scan(
        model, data, layers, k=K, maps=maps, batch_size=BATCH_SIZE, image_ids=image_ids
    )
    entries = list(index.state.entries())
    images = len({e.image_id for e in entries})
    topk.project(index, model, data)  # warm-up for both: each layer's one-time checks
    start = time.perf_counter()
    found = topk.project(index, model, data)
    batched = (time.perf_counter() - start) / len(entries)
    start = time.perf_counter()
    with Deconvnet(model) as net:
        for entry in entries:
            x = preprocess(load_image(index.names[entry.image_id]), data.preprocessing)
            net.project(x, entry.layer, Neuron(entry.channel, *entry.position))
    single = (time.perf_counter() - start) / len(entries)
    return batched, single, len(entries), images, found.reverse_passes, found.forward_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--projection-only", action="store_true", help="only part 3")
    args = parser.parse_args()
    model, preprocessing = caffe.load(PROTOTXT, CAFFEMODEL)
    data = datasets.open_dataset(PHOTOS, preprocessing)
    if args.projection_only:
        projection_table(model, data)
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
    projection_table(model, data)


def projection_table(model: torch.nn.Module, data: datasets.ImageDataset) -> None:
    default = models.load("default")
    cifar = datasets.open_dataset(CIFAR_TEST, default.preprocessing)
    cases = [
        ("SqueezeNet, 200 photos", model, data, FIRE_LAYERS, PROJECTION_MAPS, None),
        ("default, 1000 CIFAR", default, cifar, CIFAR_LAYERS, "random:16", range(1000)),
    ]
    print(f"\nprojection stage, k={K}: ms per projection (load {os.getloadavg()[0]:.2f})")
    print(
        f"{'case':<24} {'maps':>9} {'proj':>5} {'images':>6} {'reverse':>7} {'forward':>7} "
        f"{'topk':>6} {'single':>7} {'x':>5}"
    )
    for label, net, dataset, layers, maps, ids in cases:
        batched, single, count, images, reverse, forward = projection_times(
            net, dataset, layers, maps, ids
        )
        print(
            f"{label:<24} {maps:>9} {count:>5} {images:>6} {reverse:>7} {forward:>7} "
            f"{batched * 1000:>6.1f} {single * 1000:>7.1f} {single / batched:>5.2f}"
        )
    print(
        "reverse: the stage's reverse passes (one per projection); forward: images through "
        "its forward passes (each ranked image once, for all its layers)"
    )


if __name__ == "__main__":
    main()
