"""Fuzzing the parsers with mutated and truncated copies of the shared Caffe files.

Every case must end in a valid load or a CaffeFormatError within a second of load time
(a loaded net with a small declared input then also runs forward once): no other
exception, no hang, no large allocation.
CI runs FAST_CASES; ``-m slow`` runs SLOW_CASES over more files.
"""

from __future__ import annotations

import random
import re
import resource
import time
from pathlib import Path

import pytest
import torch

from deconvnet.caffe import load, schema
from deconvnet.errors import CaffeFormatError

FAST_CASES, SLOW_CASES = 150, 1200
SECONDS_PER_CASE = 1.0
MAX_RSS_GROWTH_KIB = 1024 * 1024  # 1 GiB
MAX_FORWARD_ELEMENTS = 10**5  # forward-check small nets only (CPU time is shared)
SMALL_PAIRS = [
    ("lenet/lenet_deploy.prototxt", "lenet/lenet.caffemodel"),
    ("lenet/lenet_deploy_v1.prototxt", "lenet/lenet_v1.caffemodel"),
    ("trained/mtcnn/det1.prototxt", "trained/mtcnn/det1.caffemodel"),
    ("trained/cifar10/cifar10_full.prototxt", "trained/cifar10/cifar10_full_iter_70000.caffemodel"),
]
LARGE_PAIRS = [
    ("caffenet/caffenet_conv_deploy.prototxt", "caffenet/caffenet_conv.caffemodel"),
    ("caffenet/caffenet_conv_deploy_v1.prototxt", "caffenet/caffenet_conv_v1.caffemodel"),
    ("squeezenet/squeezenet_v1.0_deploy.prototxt", "squeezenet/squeezenet_v1.0.caffemodel"),
    ("trained/mtcnn/det3.prototxt", "trained/mtcnn/det3.caffemodel"),
]
NUMBERS = ["0", "-1", "1", "3", "2147483647", "4294967296", "99999999999", "-7", "1e30", "nan"]


def _mutate_text(text: str, rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:  # change a number
        spots = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", text)]
        start, end = rng.choice(spots)
        return text[:start] + rng.choice(NUMBERS) + text[end:]
    if choice == 1:  # truncate
        return text[: rng.randrange(len(text))]
    if choice == 2:  # delete a span
        start = rng.randrange(len(text))
        return text[:start] + text[start + rng.randrange(1, 40) :]
    if choice == 3:  # duplicate a span
        start = rng.randrange(len(text))
        return text[:start] + text[start : start + rng.randrange(1, 200)] + text[start:]
    if choice == 4:  # random characters
        chars = list(text)
        for _ in range(rng.randrange(1, 5)):
            chars[rng.randrange(len(chars))] = rng.choice('{}":# \n0a-_.\\\x00\xff')
        return "".join(chars)
    tokens = [
        "MAX",
        "AVE",
        "TRAIN",
        "TEST",
        "WITHIN_CHANNEL",
        "bottom",
        "top",
        "Split",
        "Concat",
        "ReLU",
        "Deconvolution",
        "Reshape",
        "Flatten",
        "global_pooling: true",
    ]
    words = [m.span() for m in re.finditer(r"[A-Za-z_]+", text)]
    start, end = rng.choice(words)
    return text[:start] + rng.choice(tokens) + text[end:]


def _forge_blob_shape(data: bytes, rng: random.Random) -> bytes:
    net = schema.NetParameter.FromString(data)
    layers = [layer for layer in list(net.layer) + list(net.layers) if layer.blobs]
    blob = rng.choice(rng.choice(layers).blobs)
    huge = rng.choice([2**31 - 1, 2**40, 10**6, -5, 0])
    if blob.HasField("shape"):
        blob.shape.dim[rng.randrange(len(blob.shape.dim))] = huge
    else:
        blob.num = huge if abs(huge) < 2**31 else 2**31 - 1
    if rng.random() < 0.5:
        del blob.data[rng.randrange(len(blob.data)) :]
    return net.SerializeToString()


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return data[: rng.randrange(len(data))]
    if choice == 1:
        raw = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            raw[rng.randrange(min(len(raw), 4096))] = rng.randrange(256)  # headers and shapes
        return bytes(raw)
    if choice == 2:
        raw = bytearray(data)
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)
    return _forge_blob_shape(data, rng)


def _run_case(prototxt: Path, caffemodel: Path) -> tuple[str, float]:
    """Load (timed), then run a loaded small net once: its inferred shapes must hold."""
    start = time.perf_counter()
    try:
        net, _ = load(prototxt, caffemodel)
    except CaffeFormatError:
        return "error", time.perf_counter() - start
    elapsed = time.perf_counter() - start
    shapes = list(net.input_shapes.values())
    if all(torch.Size(s).numel() <= MAX_FORWARD_ELEMENTS for s in shapes):
        with torch.no_grad():
            net(*(torch.zeros(s) for s in shapes))
    return "loaded", elapsed


def fuzz(
    shared_data: Path, tmp_path: Path, cases: int, pairs: list[tuple[str, str]]
) -> dict[str, float]:
    rng = random.Random(20240601)
    root = shared_data / "caffe"
    sources = [((root / p).read_text(), (root / m).read_bytes()) for p, m in pairs]
    counts = {"error": 0, "loaded": 0}
    slowest = 0.0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for case in range(cases):
        text, model = sources[case % len(sources)]
        if case % 2:
            text = _mutate_text(text, rng)
        else:
            model = _mutate_bytes(model, rng)
        prototxt, caffemodel = tmp_path / "fuzz.prototxt", tmp_path / "fuzz.caffemodel"
        prototxt.write_text(text, errors="surrogateescape")
        caffemodel.write_bytes(model)
        outcome, elapsed = _run_case(prototxt, caffemodel)
        counts[outcome] += 1
        slowest = max(slowest, elapsed)
        assert elapsed < SECONDS_PER_CASE, f"case {case} took {elapsed:.2f} s"
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert growth < MAX_RSS_GROWTH_KIB, f"peak memory grew by {growth} KiB"
    return {**counts, "slowest_s": slowest, "rss_growth_kib": growth}


def test_fuzz_small_files(shared_data: Path, tmp_path: Path) -> None:
    stats = fuzz(shared_data, tmp_path, FAST_CASES, SMALL_PAIRS)
    assert stats["error"] > 0 and stats["loaded"] > 0


@pytest.mark.slow
def test_fuzz_all_files(shared_data: Path, tmp_path: Path) -> None:
    stats = fuzz(shared_data, tmp_path, SLOW_CASES, SMALL_PAIRS + LARGE_PAIRS)
    print(f"fuzz: {SLOW_CASES} cases, {stats}")  # reported with pytest -s
    assert stats["error"] > 0 and stats["loaded"] > 0
