"""Load time and peak memory of ``deconvnet.caffe.load`` for every shared caffemodel.

Run: ``.venv/bin/python benchmarks/bench_caffe.py [--repeat N] [--device cpu]``. Each model
is loaded in a fresh subprocess so its peak resident memory (ru_maxrss) is its own; the time
is the best of ``--repeat`` loads in that process (the first one also pays lazy imports),
each until the net is on ``--device``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of

SHARED_CAFFE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "caffe"
# caffemodel -> the prototxt it is loaded with (relative to SHARED_CAFFE)
MODELS = {
    "caffenet/caffenet_conv.caffemodel": "caffenet/caffenet_conv_deploy.prototxt",
    "caffenet/caffenet_conv_v1.caffemodel": "caffenet/caffenet_conv_deploy_v1.prototxt",
    "lenet/lenet.caffemodel": "lenet/lenet_deploy.prototxt",
    "lenet/lenet_v1.caffemodel": "lenet/lenet_deploy_v1.prototxt",
    "squeezenet/squeezenet_v1.0.caffemodel": "squeezenet/squeezenet_v1.0_deploy.prototxt",
    "trained/lenet_mnist_v1/lenet_iter_10000.caffemodel": "trained/lenet_mnist_v1/lenet.prototxt",
    "trained/lenet_mnist_v2/lenet_iter_10000.caffemodel": "trained/lenet_mnist_v2/lenet.prototxt",
    "trained/cifar10/cifar10_quick_iter_5000.caffemodel": "trained/cifar10/cifar10_quick.prototxt",
    "trained/cifar10/cifar10_full_iter_70000.caffemodel": "trained/cifar10/cifar10_full.prototxt",
    "trained/mtcnn/det1.caffemodel": "trained/mtcnn/det1.prototxt",
    "trained/mtcnn/det2.caffemodel": "trained/mtcnn/det2.prototxt",
    "trained/mtcnn/det3.caffemodel": "trained/mtcnn/det3.prototxt",
}

_CHILD = """
import json, resource, sys, time
import torch
from deconvnet.caffe import load
prototxt, caffemodel, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
device = torch.device(sys.argv[4])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeat):
    start = time.perf_counter()
    net, _ = load(prototxt, caffemodel)
    net.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times.append(time.perf_counter() - start)
params = sum(p.numel() for p in net.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"first": times[0], "best": min(times), "params": params,
                  "peak_mib": peak / 1024, "growth_mib": (peak - base) / 1024}))
"""


def measure(prototxt: Path, caffemodel: Path, repeat: int, device: str) -> dict[str, float]:
    """Load one model ``repeat`` times in a fresh interpreter (and move it to ``device``);
    return its numbers."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(prototxt), str(caffemodel), str(repeat), device],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_device_argument(parser)
    args = parser.parse_args()
    device = str(device_of(args))
    if not SHARED_CAFFE.is_dir():
        print(f"shared data not found at {SHARED_CAFFE}", file=sys.stderr)
        return 1
    header = (
        f"{'caffemodel':<52} {'MB':>6} {'params':>10} {'first s':>8} {'best s':>8} "
        f"{'peak MiB':>9} {'+MiB':>7}"
    )
    print(header)
    print("-" * len(header))
    for model, prototxt in MODELS.items():
        path = SHARED_CAFFE / model
        numbers = measure(SHARED_CAFFE / prototxt, path, args.repeat, device)
        print(
            f"{model:<52} {path.stat().st_size / 1e6:>6.1f} {numbers['params']:>10,} "
            f"{numbers['first']:>8.3f} {numbers['best']:>8.3f} {numbers['peak_mib']:>9.0f} "
            f"{numbers['growth_mib']:>7.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
