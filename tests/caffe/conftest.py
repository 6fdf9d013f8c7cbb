"""Helpers for the Caffe tests: write small prototxt/caffemodel pairs with protobuf."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deconvnet.caffe import schema


def write_caffemodel(path: Path, blobs: dict[str, list[np.ndarray]], legacy: bool = False) -> Path:
    """A caffemodel holding ``blobs`` per layer name (V2 shapes, or V1 legacy 4-D dims)."""
    net = schema.NetParameter()
    for name, arrays in blobs.items():
        layer = net.layers.add() if legacy else net.layer.add()
        layer.name = name
        for array in arrays:
            blob = layer.blobs.add()
            if legacy:
                dims = (1,) * (4 - array.ndim) + array.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(array.shape)
            blob.data.extend(np.asarray(array, np.float32).ravel().tolist())
    path.write_bytes(net.SerializeToString())
    return path


NetWriter = Callable[..., tuple[Path, Path | None]]


@pytest.fixture
def write_net(tmp_path: Path) -> NetWriter:
    """Write ``prototxt`` text (+ optional blobs) to files; returns their paths."""
    counter = iter(range(10**6))

    def _write(
        prototxt: str, blobs: dict[str, list[np.ndarray]] | None = None, legacy: bool = False
    ) -> tuple[Path, Path | None]:
        index = next(counter)
        text_path = tmp_path / f"net{index}.prototxt"
        text_path.write_text(prototxt)
        if blobs is None:
            return text_path, None
        return text_path, write_caffemodel(tmp_path / f"net{index}.caffemodel", blobs, legacy)

    return _write


@pytest.fixture
def caffemodel_writer() -> Callable[..., Path]:
    """:func:`write_caffemodel` for tests that write caffemodels themselves."""
    return write_caffemodel
