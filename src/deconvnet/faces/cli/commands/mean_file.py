"""``deconvnet mean-file``: a Caffe ``mean.binaryproto`` of an image folder, as Caffe's
``compute_image_mean`` makes it, for ``--mean-file``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deconvnet import caffe
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.inputs.datasets import ImageFolder, mean_image
from deconvnet.inputs.preprocessing import PRESETS
from deconvnet.storage.atomic import atomic_write

MEAN_FILE = "mean.binaryproto"
SUMMARY = "the per-pixel mean of an image folder as a Caffe mean.binaryproto"
DESCRIPTION = """Average every image of a folder pixel by pixel and write the result as
a Caffe mean.binaryproto (compute_image_mean), for --mean-file."""
EXAMPLES = """examples:
  deconvnet mean-file ../shared/data/cifar10/train --out cifar10_mean/
  deconvnet project photo.jpg --caffe cifar10_quick.prototxt cifar10_quick.caffemodel \\
      --mean-file cifar10_mean/mean.binaryproto --no-bgr --out out/

Every image of DATA (recursively) must have the same size. The mean is written in R, G, B
order (as Caffe's convert_cifar_data stores CIFAR-10); --bgr writes B, G, R, the order of
image databases Caffe made with OpenCV.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "mean-file", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("data", metavar="DATA", type=Path, help="a folder of same-size images")
    parser.add_argument(
        "--bgr", action="store_true", help="write the channels as B, G, R instead of R, G, B"
    )
    add_output_arguments(parser)


@writes_output(apart_from=("data", "DATA"))
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    data = ImageFolder(args.data, PRESETS["unit"])  # read as stored, never preprocessed
    with ProgressBar("mean", unit="img") as bar:
        mean = mean_image(data, progress=bar)
    channels = mean.transpose(2, 0, 1)
    if args.bgr:
        channels = channels[::-1]
    blob = caffe.mean_file_bytes(np.ascontiguousarray(channels))
    atomic_write(args.out / MEAN_FILE, lambda handle: handle.write(blob))
    folder.write_manifest(
        {
            "command": "mean-file",
            "data": str(args.data),
            "images": len(data),
            "size": list(mean.shape[:2]),
            "channel_order": "BGR" if args.bgr else "RGB",
            "mean_pixel": [float(v) for v in channels.reshape(3, -1).mean(axis=1)],
            "file": MEAN_FILE,
        }
    )
    print(args.out / MEAN_FILE)
    return 0
