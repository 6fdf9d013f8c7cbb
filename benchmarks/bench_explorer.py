"""Speed of the live explorer: HTTP round trips on loopback against the same work done by
the library in this process, the default model and SqueezeNet v1.0 (real Caffe weights,
227 px).

Run: ``.venv/bin/python benchmarks/bench_explorer.py [--clicks 30] [--uploads 12]``.

``deconvnet serve`` runs in a subprocess on a free loopback port; this process is the
client (httpx). Measured, as p50/p95 in milliseconds:

1. **Upload -> layer grid**: POST the photo, GET the default layer's JSON and its grid PNG
   (a new photo each time: nothing cached).
2. **Unit click -> projection PNG**: GET the unit's JSON (one single-unit reverse pass) and
   its projection PNG, for a new map each time (nothing cached); on the default layer
   (the last convolution) and, for SqueezeNet, on fire5/concat too.

The peer is the library on the same unit in this process (``Deconvnet.project`` with a
``Neuron``, drawn and PNG-encoded), click by click in turn with the HTTP one: the ratio is
what HTTP and the server add (the server also caches the image's forward results). The
peer runs in a worker thread, as the server's endpoints do: on this machine torch's
intra-op threads in the main thread made the same call up to 50x slower under load (a
worker thread does not use them). Response
sizes are the bytes of each answer. Targets (issue 13): click p95 <= 300 ms (default
model), <= 1 s (SqueezeNet); upload -> grid <= 2 s. Both sides project in the faces'
precision (``auto``). ``--device cuda`` serves and runs the peer on the GPU.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _device import add_device_argument, device_of, synchronize

from deconvnet import Deconvnet, Neuron, caffe, models
from deconvnet.engine.precision import FACES_PRECISION
from deconvnet.figures.files import png_bytes
from deconvnet.figures.render import show
from deconvnet.inputs.prepared import prepare
from deconvnet.inputs.preprocessing import Preprocessing

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUEEZENET = SHARED / "caffe" / "squeezenet"
PROTOTXT = SQUEEZENET / "squeezenet_v1.0_deploy.prototxt"
CAFFEMODEL = SQUEEZENET / "squeezenet_v1.0.caffemodel"
PHOTOS = SHARED / "imagenet-sample"
CIFAR = SHARED / "cifar10" / "test"
START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


class Server:
    """``deconvnet serve`` with the given model options, in a subprocess."""

    def __init__(self, model_args: list[str]) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "deconvnet",
            "serve",
            *model_args,
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base, timeout=60)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                self.model = self.client.get("/api/model").json()
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start: {self.process.stderr}") from None
                time.sleep(0.2)

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def upload_to_grid(
    server: Server, photos: list[Path]
) -> tuple[list[float], dict[str, int], list[str]]:
    layer = server.model["default_layer"]
    times, ids, sizes = [], [], {}
    for photo in photos:
        start = time.perf_counter()
        info = server.client.post("/api/upload", files={"file": (photo.name, photo.read_bytes())})
        grid = server.client.get(f"/api/images/{info.json()['id']}/layers/{layer}")
        png = server.client.get(grid.json()["grid_url"])
        times.append(time.perf_counter() - start)
        assert info.status_code == grid.status_code == png.status_code == 200
        ids.append(info.json()["id"])
        sizes = {
            "upload JSON": len(info.content),
            "grid JSON": len(grid.content),
            "grid PNG": len(png.content),
        }
    return times, sizes, ids


def clicks(
    server: Server,
    peer: Deconvnet,
    x: torch.Tensor,
    spec: Preprocessing,
    image_id: str,
    layer: str,
    count: int,
) -> tuple[list[float], list[float], dict[str, int]]:
    """HTTP click and the library on the same unit, taking turns click by click so that
    machine noise hits both."""
    channels = next(item["channels"] for item in server.model["layers"] if item["name"] == layer)
    maps = peer.layer_output(x, layer)[0]
    ours, theirs, sizes = [], [], {}
    worker = ThreadPoolExecutor(1)
    for channel in random.Random(0).sample(range(channels), min(count, channels)):
        start = time.perf_counter()
        unit = server.client.get(f"/api/images/{image_id}/layers/{layer}/units/{channel}")
        png = server.client.get(unit.json()["projection_url"])
        ours.append(time.perf_counter() - start)
        assert unit.status_code == png.status_code == 200
        sizes = {"unit JSON": len(unit.content), "projection PNG": len(png.content)}
        theirs.append(worker.submit(library_click, peer, x, spec, maps, layer, channel).result())
    worker.shutdown()
    return ours, theirs, sizes


def library_click(
    peer: Deconvnet,
    x: torch.Tensor,
    spec: Preprocessing,
    maps: torch.Tensor,
    layer: str,
    channel: int,
) -> float:
    """The peer's click: project the map's strongest unit, draw it, encode the PNG."""
    start = time.perf_counter()
    y, x_pos = divmod(int(maps[channel].flatten().argmax()), maps.shape[2])
    result = peer.project(x, layer, Neuron(channel, y, x_pos))
    png_bytes(show(result.images[0, 0].cpu(), "rgb", channel_order=spec.channel_order))
    synchronize(x.device)
    return time.perf_counter() - start


def report(
    name: str,
    server: Server,
    model: torch.nn.Module,
    spec: Preprocessing,
    photos: list[Path],
    layers: list[str],
    count: int,
) -> None:
    upload_times, sizes, ids = upload_to_grid(server, photos)
    device = next(model.parameters()).device
    net = Deconvnet(model, precision=FACES_PRECISION)
    x = prepare(photos[0], spec, device).tensor
    p50, p95 = percentiles(upload_times)
    print(f"\n{name}: upload -> {server.model['default_layer']} grid, {len(photos)} photos")
    print(f"  p50 {1000 * p50:7.1f} ms   p95 {1000 * p95:7.1f} ms   sizes {sizes}")
    print(
        f"  {'click on':<18} {'n':>3} {'HTTP p50':>9} {'p95':>8} {'library p50':>12} "
        f"{'ratio':>6}  sizes"
    )
    for layer in layers:
        times, peer, click_sizes = clicks(server, net, x, spec, ids[0], layer, count)
        p50, p95 = percentiles(times)
        peer50, _ = percentiles(peer)
        print(
            f"  {layer:<18} {len(times):>3} {1000 * p50:>7.1f}ms {1000 * p95:>6.1f}ms "
            f"{1000 * peer50:>10.1f}ms {p50 / peer50:>6.2f}  {click_sizes}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--uploads", type=int, default=12)
    add_device_argument(parser)
    args = parser.parse_args()
    device = device_of(args)
    on_device = ["--device", str(device)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
        "HTTP on loopback"
    )
    cifar = sorted(CIFAR.glob("*/*.jpg"))[::500][: args.uploads]
    server = Server(on_device)
    default = models.load("default").to(device)
    try:
        report(
            "default model (CIFAR-10 test photos, 32 px)",
            server,
            default,
            default.preprocessing,
            cifar,
            [server.model["default_layer"]],
            args.clicks,
        )
    finally:
        server.close()
    photos = sorted(PHOTOS.glob("*.JPEG"))[: args.uploads]
    server = Server(["--caffe", str(PROTOTXT), str(CAFFEMODEL), *on_device])
    try:
        net, spec = caffe.load(PROTOTXT, CAFFEMODEL)
        net.to(device)
        report(
            "SqueezeNet v1.0 (ImageNet sample photos, 227 px)",
            server,
            net,
            spec,
            photos,
            [server.model["default_layer"], "fire5/concat"],
            args.clicks,
        )
    finally:
        server.close()


if __name__ == "__main__":
    main()
