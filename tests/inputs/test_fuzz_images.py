"""Mutation fuzzer over image files: byte flips, truncations, splices and header tampering of
small PNG, JPEG, GIF, BMP, TIFF and WebP files made here, decoded with ``load_image``.

Each case runs in a worker process under a timeout (tests/_fuzz.py). Allowed outcomes: a
``(H, W, 3)`` uint8 array, or one :class:`~deconvnet.errors.ImageError` line. Anything else
is a crash, a timeout is a hang. Oracle for wrong results: every byte of a PNG is covered
by its signature, chunk lengths or CRCs and nothing follows IEND here, so a mutated PNG
that decodes is a wrong result accepted, as is a truncated file of any format that decodes
to anything but the complete image (a truncation that loses only trailing bytes, e.g. a
JPEG's end marker, may decode to the full image). CI runs FAST_CASES; ``-m slow`` runs SLOW_CASES.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet import topk
from deconvnet.errors import ImageError
from deconvnet.inputs.datasets import ImageFolder
from deconvnet.inputs.images import load_image
from tests import _datasets, _fuzz, _nets
from tests.instruments.test_topk import brute_force, state_as_lists

FAST_CASES, SLOW_CASES = 50, 3000
SECONDS_PER_CASE = 10.0  # generous: two cores shared by several test runs
MUTATIONS = ("flip", "truncate", "splice", "header")
INTERESTING = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00")


@cache
def seeds() -> list[tuple[str, bytes, np.ndarray]]:
    """``(format, file bytes, decoded pixels)`` of the files the mutations start from."""
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    made = []
    for name, image, options in (
        ("PNG", Image.fromarray(rgb), {}),
        ("PNG", Image.fromarray(rgb).convert("P"), {}),
        ("PNG", Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"), {}),
        ("JPEG", Image.fromarray(rgb), {"quality": 90}),
        ("GIF", Image.fromarray(rgb).convert("P"), {}),
        ("BMP", Image.fromarray(rgb), {}),
        ("TIFF", Image.fromarray(rgb), {"compression": "tiff_lzw"}),
        ("WEBP", Image.fromarray(rgb), {"quality": 80}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=name, **options)
        with tempfile.NamedTemporaryFile(suffix=".img", delete=False) as handle:
            handle.write(buffer.getvalue())
        try:
            made.append((name, buffer.getvalue(), load_image(handle.name)))
        finally:
            os.unlink(handle.name)
    return made


def mutate(number: int) -> tuple[str, str, bytes, bytes]:
    """Case ``number``: (format, mutation, original bytes, mutated bytes), deterministic."""
    rng = random.Random(number)
    name, data, _ = rng.choice(seeds())
    kind = MUTATIONS[number % len(MUTATIONS)]
    mutated = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] ^= rng.randint(1, 255)
    elif kind == "truncate":
        mutated = mutated[: rng.randrange(len(mutated))]
    elif kind == "splice":
        _, donor, _ = rng.choice(seeds())
        start = rng.randrange(len(donor))
        piece = donor[start : start + rng.randint(1, 64)]
        at = rng.randrange(len(mutated) - 1)
        cut = rng.choice([0, len(piece)])  # insert, or overwrite as many bytes
        mutated[at : at + cut] = piece
    else:
        at = rng.randrange(min(64, len(mutated) - 4))
        mutated[at : at + 4] = rng.choice(INTERESTING)
    return name, kind, data, bytes(mutated)


def case(number: int) -> tuple[str, str]:
    """Run one case (in the worker): ``("decoded" | "refused" | "wrong" | crash, detail)``."""
    name, kind, original, data = mutate(number)
    if data == original:
        return "unchanged", f"{name} {kind}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.img"
        path.write_bytes(data)
        try:
            pixels = load_image(path)
        except ImageError as error:
            message = str(error)
            if "\n" in message or not message:
                return _fuzz.CRASH, f"{name} {kind}: not one line: {message!r}"
            return "refused", f"{name} {kind}: {message[:120]}"
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3):
        return "wrong", f"{name} {kind}: returned {type(pixels).__name__}"
    if pixels.shape[2] != 3:
        return "wrong", f"{name} {kind}: shape {pixels.shape}"
    if name == "PNG":
        return "wrong", f"PNG {kind}: a mutated PNG decoded"
    if kind == "truncate":
        full = next(p for _, d, p in seeds() if d == original)
        if pixels.shape != full.shape or not np.array_equal(pixels, full):
            return "wrong", f"{name} truncated to {len(data)} of {len(original)} bytes decoded"
        return "decoded", f"{name} truncate: only trailing bytes lost"
    return "decoded", f"{name} {kind}"


def _run(count: int, offset: int) -> _fuzz.Report:
    report = _fuzz.run_cases(
        "tests.inputs.test_fuzz_images:case", list(range(offset, offset + count)), SECONDS_PER_CASE
    )
    print(f"image fuzz: {report.total} cases {dict(report.counts)}")
    for kind in (_fuzz.CRASH, _fuzz.HANG, "wrong"):
        assert not report.counts[kind], report.examples[kind]
    assert report.total == count
    return report


def test_image_mutations_fast() -> None:
    report = _run(FAST_CASES, offset=0)
    assert report.counts["refused"] > 0


@pytest.mark.slow
def test_image_mutations_slow() -> None:
    report = _run(SLOW_CASES, offset=100_000)
    assert report.counts["refused"] > SLOW_CASES // 4


@pytest.mark.filterwarnings("ignore:.*:UserWarning:PIL")  # Pillow's notes on damaged tags
def test_a_scan_over_mutated_files_skips_the_bad_ones_and_ranks_the_rest(tmp_path: Path) -> None:
    """40 mutated files in one folder: the scan ends, every unreadable one is listed with a
    one-line reason, and the ranking equals the brute force over the readable ones."""
    suffixes = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
    for number in range(40):
        name, _, _, data = mutate(200_000 + number)
        (tmp_path / f"case{number:02d}.{suffixes.get(name, 'webp')}").write_bytes(data)
    data = ImageFolder(tmp_path, _datasets.TIE_SPEC)
    net = _nets.tie_net()
    with _fuzz.deadline(120.0):
        index = topk.scan(net, data, ["3"], k=3, batch_size=8)
    readable = [i for i in range(len(data)) if data[i].image is not None]
    assert len(index.skipped) == len(data) - len(readable) > 0
    assert all(why and "\n" not in why for _, why in index.skipped)
    assert state_as_lists(index.state, "3") == brute_force(net, data, 3, 3, readable)
