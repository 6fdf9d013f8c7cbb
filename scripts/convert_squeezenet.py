"""Convert Caffe's SqueezeNet v1.0 Deep-Compression weights into the package's embedded set.

Reads the caffemodel with deconvnet's own Caffe reader (``deconvnet.caffe.parse``), puts
each layer's ``[weight, bias]`` under the torchvision state-dict key that
``deconvnet.models.squeezenet.CAFFE_MODULES_1_0`` names, checks every shape against the
model, and writes the tensors in the exact codebook + uint8 form of
``deconvnet.models.codebook`` as one safetensors file. The output depends only on the
caffemodel: a rerun writes the same bytes. Paste the printed digest into
``DEEP_COMPRESSION_SHA256`` when the file changes.

Usage::

    .venv/bin/python scripts/convert_squeezenet.py [--caffemodel PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from deconvnet.caffe.parse import blob_array, read_caffemodel, weight_blobs
from deconvnet.errors import CaffeFormatError
from deconvnet.models import codebook
from deconvnet.models.squeezenet import (
    CAFFE_MODULES_1_0,
    SQUEEZENET1_0_DEEP_COMPRESSION,
    SqueezeNet,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAFFEMODEL = (
    REPO.parent / "shared" / "data" / "caffe" / "squeezenet" / "squeezenet_v1.0.caffemodel"
)
DEFAULT_OUT = (
    REPO / "src" / "deconvnet" / "models" / "weights" / SQUEEZENET1_0_DEEP_COMPRESSION.file_name
)
BLOB_KINDS = ("weight", "bias")


def caffe_state_dict(caffemodel: Path) -> dict[str, torch.Tensor]:
    """The caffemodel's blobs as a float32 state dict of torchvision's ``squeezenet1_0``."""
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in SqueezeNet("1_0").state_dict().items()}
    blobs = weight_blobs(read_caffemodel(caffemodel))
    unknown = sorted(set(blobs) - set(CAFFE_MODULES_1_0))
    if unknown:
        raise CaffeFormatError(f"{caffemodel}: layers {unknown} have no place in SqueezeNet 1.0")
    state: dict[str, torch.Tensor] = {}
    for layer, module in CAFFE_MODULES_1_0.items():
        if len(blobs.get(layer, [])) != len(BLOB_KINDS):
            raise CaffeFormatError(f"{caffemodel}: layer {layer!r} needs a weight and a bias blob")
        for blob, kind in zip(blobs[layer], BLOB_KINDS, strict=True):
            key = f"{module}.{kind}"
            state[key] = torch.from_numpy(blob_array(blob, shapes[key], f"{layer} {kind}"))
    return state


def convert(caffemodel: Path, out: Path) -> str:
    """Write the embedded file for ``caffemodel`` to ``out`` atomically; return its SHA-256."""
    stored = codebook.encode(caffe_state_dict(caffemodel))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    try:
        save_file(stored, tmp_name, metadata={codebook.ENCODING_KEY: codebook.ENCODING})
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caffemodel", type=Path, default=DEFAULT_CAFFEMODEL)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    digest = convert(args.caffemodel, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
