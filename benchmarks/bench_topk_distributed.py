"""The top-k scan at 1 and 2 processes (torchrun, gloo), per-image costs, memory per rank.

Run: ``.venv/bin/python benchmarks/bench_topk_distributed.py [--rounds 2]``.

1. **Throughput** at 1 process and at 2 torchrun ranks, each on the same images: our scan
   against the peer, the plain model forward over the same DataLoader split the same way
   (what any torch.distributed inference loop pays); the ratio is ours / peer's time. The
   wall time runs from a barrier after start-up to the merged result on every rank, so it
   includes the merge and waiting for the slowest rank, not interpreter start-up. One
   process runs with 1 and with 2 threads (torchrun gives each rank 1).
2. **Per-image cost per layer set**, one process, 1 thread: the numbers ``docs/scaling.md``
   extrapolates from. ZFNet (random weights: the cost does not depend on them) on the 200
   ImageNet sample photos (JPEG decode, resize 256, crop 224 included), SqueezeNet v1.0,
   and the default CIFAR-10 net; the scan stops at the deepest layer of its set.
3. **Projection cost** per projected unit (ZFNet, conv1-conv5, 4 maps each, k = 9).
4. **Peak memory per rank** (VmHWM) of 2-rank scans over 1,000 and 5,000 CIFAR-10 images,
   all maps of conv1-conv4: it must not grow with the dataset.

``--device cuda`` runs every model on the GPU (each rank on ``cuda:LOCAL_RANK``, NCCL
between ranks); the clocks wait for the device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, synchronize

from deconvnet import caffe, models, topk
from deconvnet.inputs import datasets
from deconvnet.inputs.datasets import collate_by_size
from deconvnet.instruments.topk import distributed

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTOS = SHARED / "imagenet-sample"
CIFAR_TEST = SHARED / "cifar10" / "test"
SQUEEZENET = SHARED / "caffe" / "squeezenet"
TORCHRUN = Path(sys.executable).with_name("torchrun")
K = 9
BATCH = 25
TIMEOUT = timedelta(minutes=10)
THROUGHPUT_CASES = {
    "zfnet-photos": ("zfnet", PHOTOS, ["features.0", "features.4", "features.8", "features.10",
                                       "features.12"], None),
    "default-cifar": ("default", CIFAR_TEST, ["features.0", "features.4", "features.8",
                                              "features.10"], 2000),
}  # fmt: skip
LAYER_SETS = [
    ("zfnet", "conv1", ["features.0"]),
    ("zfnet", "conv1-conv5", ["features.0", "features.4", "features.8", "features.10",
                              "features.12"]),
    ("squeezenet", "fire2", ["fire2/concat"]),
    ("squeezenet", "fire2,fire5,fire9", ["fire2/concat", "fire5/concat", "fire9/concat"]),
    ("default", "conv1-conv4", ["features.0", "features.4", "features.8", "features.10"]),
]  # fmt: skip
MEMORY_SIZES = (1000, 5000)


def load(name: str) -> tuple[torch.nn.Module, Any]:
    if name == "squeezenet":
        prototxt = SQUEEZENET / "squeezenet_v1.0_deploy.prototxt"
        return caffe.load(prototxt, SQUEEZENET / "squeezenet_v1.0.caffemodel")
    model = models.load(name)
    return model, model.preprocessing


def plain_forward(model: torch.nn.Module, data: datasets.ImageDataset, ids: range) -> None:
    """The peer: the model's own forward over the same loader (no hooks, no top-k)."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, list(ids)), batch_size=BATCH, collate_fn=collate_by_size
    )
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in loader:
            for _, inputs in batch.groups:
                model(inputs.to(device))
    synchronize(device)


def rss_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(case: str, count: int | None, maps: str, device: str) -> None:
    """One process of a throughput or memory run; prints one JSON line per rank."""
    model_name, folder, layers, limit = THROUGHPUT_CASES[case]
    model, preprocessing = load(model_name)
    data = datasets.open_dataset(folder, preprocessing)
    total = min(len(data), count or limit or len(data))
    group = distributed.Group.from_environment()
    before = rss_mib("VmRSS")
    if group is None:
        model.to(device)
        start = time.perf_counter()
        topk.scan(model, data, layers, k=K, maps=maps, batch_size=BATCH, image_ids=range(total))
        synchronize(torch.device(device))
        ours = time.perf_counter() - start
        start = time.perf_counter()
        plain_forward(model, data, range(total))
        peer = time.perf_counter() - start
        rank, world = 0, 1
    else:
        rank, world = group.rank, group.world_size
        sub = _Prefix(data, total)
        with distributed.process_group(group, device, TIMEOUT) as joined:
            device = joined.device
            model.to(device)
            distributed.barrier(group, device)
            start = time.perf_counter()
            distributed.scan_shards(model, sub, layers, group, device, k=K, maps=maps,
                                    batch_size=BATCH)  # fmt: skip
            ours = time.perf_counter() - start
            distributed.barrier(group, device)
            start = time.perf_counter()
            plain_forward(model, sub, distributed.shard(total, BATCH, rank, world))
            distributed.barrier(group, device)
            peer = time.perf_counter() - start
    print(json.dumps({
        "rank": rank, "world": world, "images": total, "ours_s": ours, "peer_s": peer,
        "rss_before_mib": before, "hwm_mib": rss_mib("VmHWM"),
    }), flush=True)  # fmt: skip


class _Prefix(datasets.ImageDataset):
    """The first ``count`` images of a dataset (same ids, names and pixels)."""

    def __init__(self, data: datasets.ImageDataset, count: int) -> None:
        super().__init__(data.preprocessing)
        self.data, self.count = data, count

    def __len__(self) -> int:
        return self.count

    def raw_image(self, image_id: int) -> Any:
        return self.data.raw_image(image_id)

    def name(self, image_id: int) -> str:
        return self.data.name(image_id)

    def fingerprint(self) -> str:
        return f"{self.data.fingerprint()}[:{self.count}]"


def launch(
    nproc: int, case: str, count: int | None, maps: str, threads: int, device: str
) -> list[dict]:
    """Run :func:`child` in fresh processes; returns every rank's numbers."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    tail = [__file__, "--child", case, "--count", str(count or 0), "--maps", maps]
    tail += ["--device", device]
    if nproc == 1:
        command = [sys.executable, *tail]
    else:
        command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", *tail]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{command} failed:\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def per_image_costs(device: torch.device) -> list[tuple[str, str, int, float, float]]:
    """Wall and CPU seconds per image of one-process, one-thread scans, per model and layer
    set, and of reading + preprocessing alone (``loader``). CPU time (``process_time``) is
    the cost on an idle core: on a shared machine the wall time also counts waiting."""
    torch.set_num_threads(1)
    rows = []
    for model_name, label, layers in [("loader", "decode+resize+crop", []), *LAYER_SETS]:
        model, preprocessing = load("zfnet" if model_name == "loader" else model_name)
        model.to(device)
        data = datasets.open_dataset(CIFAR_TEST if model_name == "default" else PHOTOS,
                                     preprocessing)  # fmt: skip
        ids = range(min(len(data), 1000))
        if layers:
            topk.scan(model, data, layers, k=K, batch_size=BATCH, image_ids=range(BATCH))
        wall, cpu = time.perf_counter(), time.process_time()
        if layers:
            topk.scan(model, data, layers, k=K, batch_size=BATCH, image_ids=ids)
        else:
            for image_id in ids:
                data[image_id]
        synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append((model_name, label, len(ids), wall / len(ids), cpu / len(ids)))
    return rows


def projection_cost(device: torch.device) -> tuple[int, float, float]:
    """Wall and CPU seconds per projected unit: ZFNet conv1-conv5, 4 maps each, k = 9."""
    torch.set_num_threads(1)
    model, preprocessing = load("zfnet")
    model.to(device)
    data = datasets.open_dataset(PHOTOS, preprocessing)
    layers = [layers for name, _, layers in LAYER_SETS if name == "zfnet"][-1]
    index = topk.scan(model, data, layers, k=K, maps=4, batch_size=BATCH)
    wall, cpu = time.perf_counter(), time.process_time()
    found = topk.project(index, model, data)
    synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(found), wall / len(found), cpu / len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-throughput", action="store_true", help="parts 2-4 only")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--maps", default="all", help=argparse.SUPPRESS)
    add_device_argument(parser)
    args = parser.parse_args()
    device = device_of(args)
    if args.child:
        child(args.child, args.count or None, args.maps, str(device))
        return
    load_average = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPU cores (load average {load_average}), "
          f"torch {torch.__version__}, device {device}")  # fmt: skip
    print("\n1. throughput, k=9, all maps, batch 25 (ours: top-k scan; peer: plain forward)")
    print(f"{'case':<14} {'setup':<16} {'images':>6} {'ours img/s':>10} {'peer img/s':>10} "
          f"{'ours/peer time':>14}")  # fmt: skip
    for case in () if args.skip_throughput else THROUGHPUT_CASES:
        for label, nproc, threads in (("1 proc 1 thread", 1, 1), ("1 proc 2 threads", 1, 2),
                                      ("2 ranks x 1", 2, 1)):  # fmt: skip
            ratios, rates, peers = [], [], []
            for _ in range(args.rounds):
                ranks = launch(nproc, case, None, "all", threads, str(device))
                lead = next(r for r in ranks if r["rank"] == 0)
                rates.append(lead["images"] / lead["ours_s"])
                peers.append(lead["images"] / lead["peer_s"])
                ratios.append(lead["ours_s"] / lead["peer_s"])
            rate, peer, ratio = (statistics.median(v) for v in (rates, peers, ratios))
            print(f"{case:<14} {label:<16} {lead['images']:>6} {rate:>10.1f} {peer:>10.1f} "
                  f"{ratio:>14.3f}")  # fmt: skip
    print("\n2. per-image scan cost, 1 process, 1 thread (k=9, all maps), ms per image")
    print(f"{'model':<11} {'layer set':<18} {'images':>6} {'wall':>8} {'CPU':>8}")
    for model_name, label, count, wall, cpu in per_image_costs(device):
        print(f"{model_name:<11} {label:<18} {count:>6} {wall * 1000:>8.2f} {cpu * 1000:>8.2f}")
    count, wall, cpu = projection_cost(device)
    print(f"\n3. projection, ZFNet conv1-conv5, 4 maps, k=9: {count} units, "
          f"{wall * 1000:.1f} ms/unit wall, {cpu * 1000:.1f} ms/unit CPU")  # fmt: skip
    print("\n4. peak memory per rank, 2 ranks, default model, conv1-conv4 all maps, k=9")
    print(f"{'images':>7} {'rank':>4} {'RSS before':>10} {'VmHWM':>8} {'growth MiB':>10}")
    for size in MEMORY_SIZES:
        ranks = launch(2, "default-cifar", size, "all", 1, str(device))
        for rank in sorted(ranks, key=lambda r: r["rank"]):
            growth = rank["hwm_mib"] - rank["rss_before_mib"]
            print(f"{size:>7} {rank['rank']:>4} {rank['rss_before_mib']:>10.1f} "
                  f"{rank['hwm_mib']:>8.1f} {growth:>10.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
