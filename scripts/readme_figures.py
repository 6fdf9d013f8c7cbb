"""Regenerate the README's pictures (needs ../shared/data for the Caffe demo figure).

python scripts/readme_figures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import deconvnet as dn
from deconvnet import caffe
from deconvnet.engine.compat import CAFFE_DECONVNET, demo_display
from deconvnet.faces.cli import main
from deconvnet.figures import render

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "docs" / "images"
WIDTH = 900


def _labelled(tiles: list[np.ndarray], labels: list[str]) -> np.ndarray:
    return render.contact_sheet(tiles, labels, columns=len(tiles), min_tile=227)


def _save(array: np.ndarray, name: str) -> None:
    picture = Image.fromarray(array)
    if picture.width > WIDTH:
        picture = picture.resize(
            (WIDTH, round(picture.height * WIDTH / picture.width)), Image.LANCZOS
        )
    OUT.mkdir(parents=True, exist_ok=True)
    picture.save(OUT / name, optimize=True)
    print(OUT / name)


MAIN_JOB = [
    "project", "--model", "squeezenet1_0", "--weights", "deep-compression", "--layer", "fire5"
]
"""The README's first command: embedded ImageNet SqueezeNet on the bundled cat photo."""


def main_job() -> None:
    tmp = ROOT / "out" / "readme_main"
    if main([*MAIN_JOB, "--out", str(tmp), "--overwrite"]) != 0:
        raise SystemExit("main job failed")
    sheet = np.asarray(Image.open(next(tmp.glob("*_sheet.png"))).convert("RGB"))
    _save(sheet, "main_job.png")


def demo_vs_paper() -> None:
    folder = SHARED / "caffe"
    net, prep = caffe.load(
        folder / "caffenet" / "caffenet_conv_deploy.prototxt",
        folder / "caffenet" / "caffenet_conv.caffemodel",
    )
    x = torch.from_numpy(np.load(folder / "seed" / "forward_butterfly.npz")["data"])
    select = CAFFE_DECONVNET.selection()
    with dn.Deconvnet(net, compat="caffe-deconvnet") as old:
        demo = old.project(x, "pool5", select).images[0, 0]
    with dn.Deconvnet(net) as paper:
        joint = paper.project(x, "pool5", dn.Threshold(CAFFE_DECONVNET.threshold)).images[0, 0]
        top = paper.project(x, "pool5", dn.TopMaps(5))
    with dn.Deconvnet(net, collisions="overwrite") as overwrite:
        erased = overwrite.project(x, "pool5", dn.TopMaps(5))
    demo_rgb = (demo_display(demo, prep).clip(0, 1) * 255).round().astype(np.uint8)
    row1 = _labelled(
        [
            demo_rgb,
            render.to_display(joint, "minmax", channel_order="BGR"),
            render.to_display(joint, "signed", channel_order="BGR"),
        ],
        [
            "old caffe-deconvnet demo\n(reproduced to 1e-4)",
            "paper: same pool5>=150 seed\nzeiler rule, LRN skipped, sum",
            "paper, signed view\n(grey = 0)",
        ],
    )
    scale = render.shared_range([top.images[0], erased.images[0]], "signed")
    row2 = _labelled(
        [
            render.to_display(top.images[0, k], "signed", scale=scale, channel_order="BGR")
            for k in range(5)
        ],
        [f"sum: pool5 ch {int(c)}" for c in top.channels[0]],
    )
    row3 = _labelled(
        [
            render.to_display(erased.images[0, k], "signed", scale=scale, channel_order="BGR")
            for k in range(5)
        ],
        [
            f"overwrite: ch {int(c)}"
            + (" (erased)" if float(erased.images[0, k].abs().max()) == 0 else "")
            for k, c in enumerate(erased.channels[0])
        ],
    )
    _save(row1, "demo_vs_paper.png")
    _save(
        np.concatenate([_pad(row2, row3.shape[1]), _pad(row3, row2.shape[1])]),
        "sum_vs_overwrite.png",
    )


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    if array.shape[1] >= width:
        return array
    pad = np.full((array.shape[0], width - array.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([array, pad], axis=1)


def squeezenet_instruments() -> None:
    """Fig. 7 occlusion and the rule comparison on the embedded ImageNet SqueezeNet v1.0."""
    model = ["--model", "squeezenet1_0", "--weights", "deep-compression"]
    tmp = ROOT / "out" / "readme_squeezenet"
    runs = {
        "occlusion": ["occlude", *model, "--layer", "relu10"],
        "compare": ["compare", *model, "--layer", "fire9", "--select", "top:3"],
    }
    for name, argv in runs.items():
        if main([*argv, "--out", str(tmp / name), "--overwrite"]) != 0:
            raise SystemExit(f"{name} failed")
        picture = np.asarray(Image.open(tmp / name / f"{name}.png").convert("RGB"))
        _save(picture, f"squeezenet_{name}.png")


if __name__ == "__main__":
    main_job()
    demo_vs_paper()
    squeezenet_instruments()
