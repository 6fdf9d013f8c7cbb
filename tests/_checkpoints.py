"""A partial top-k scan and its checkpoint, shared by the checkpoint tests and their fuzzer.

The scan (tie network, 13 distinct binary 8x8 images, layers 0 and 3, k=4, batches of 2)
is stopped after three batches, so the checkpoint holds ``done=6``; resuming it must give
exactly what one uninterrupted scan gives (integer arithmetic: every value is exact).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deconvnet import topk
from deconvnet.inputs.datasets import ImageDataset, open_dataset
from deconvnet.instruments.topk import checkpoint as checkpoint_file
from deconvnet.instruments.topk.scan import TopKIndex
from deconvnet.instruments.topk.state import EMPTY_ID
from tests import _datasets, _nets

LAYERS = ["0", "3"]
OPTIONS: dict[str, Any] = {"k": 4, "batch_size": 2, "checkpoint_every": 1}
DONE = 6


class Stopped(Exception):
    """Raised from the progress callback: a scan killed after a checkpoint."""


def distinct_images(count: int = 13, seed: int = 7) -> np.ndarray:
    """Binary 8x8 images, no two alike, one all black (ties at zero)."""
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 2, (count, 8, 8, 3)) * 255).astype(np.uint8)
    images[min(7, count - 1)] = 0
    assert len({image.tobytes() for image in images}) == count
    return images


def dataset(folder: Path) -> ImageDataset:
    path = folder / "distinct.npz"
    if not path.exists():
        np.savez(path, x=distinct_images())
    return open_dataset(path, _datasets.TIE_SPEC)


def stop_at(done: int) -> Callable[[int, int | None], None]:
    def progress(seen: int, total: int | None) -> None:
        if seen >= done:
            raise Stopped

    return progress


def partial_checkpoint(folder: Path, data: ImageDataset) -> Path:
    """Scan until ``DONE`` images are checkpointed, then stop; returns the checkpoint."""
    path = folder / "scan.pt"
    with contextlib.suppress(Stopped):
        topk.scan(_nets.tie_net(), data, LAYERS, checkpoint=path, progress=stop_at(DONE), **OPTIONS)
    return path


def resume(data: ImageDataset, path: Path) -> TopKIndex:
    return topk.scan(_nets.tie_net(), data, LAYERS, checkpoint=path, resume=True, **OPTIONS)


def fresh(data: ImageDataset) -> TopKIndex:
    return topk.scan(_nets.tie_net(), data, LAYERS, **OPTIONS)


def summary(index: TopKIndex) -> tuple[Any, ...]:
    """Everything a scan's result says, as plain values (for exact comparison)."""
    layers = []
    for name, top in index.state.layers.items():
        filled = top.image_ids != EMPTY_ID
        layers.append(
            (
                name,
                top.channels.tolist(),
                top.values[filled].tolist(),
                top.image_ids.tolist(),
                top.positions.tolist(),
            )
        )
    return (
        tuple(layers),
        index.state.images_seen,
        index.state.skipped,
        sorted(index.state.digests.items()),
        index.state.content,
        sorted(index.names.items()),
        index.num_images,
    )


def signed(payload: object) -> bytes:
    """A checkpoint file for ``payload`` with a correct checksum (a re-signed forgery)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    line = f"{checkpoint_file.CHECKPOINT_FORMAT} {hashlib.sha256(body).hexdigest()}\n"
    return line.encode() + body
