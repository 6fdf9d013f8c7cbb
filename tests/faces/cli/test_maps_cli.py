"""``deconvnet maps`` past the first layer (issue 23, item 2): SqueezeNet's fire9 comes out
as numbered, enlarged, titled pages on one scale, and ``--maps`` picks what to show.

Oracle for ``--maps top:N``: the N maps with the largest maximum of the layer's output,
read with the engine's ``layer_output`` (the forward pass alone)."""

from __future__ import annotations

import json

import torch
from PIL import Image

from deconvnet import Deconvnet, models
from deconvnet.faces.cli import main
from deconvnet.inputs import images

SQUEEZENET = ["--model", "squeezenet1_0", "--weights", "deep-compression"]
PHOTO = str(images.PHOTO_DIR / "chelsea.png")


def test_fire9_is_eight_readable_pages_on_one_scale(tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["maps", PHOTO, *SQUEEZENET, "--layer", "fire9", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pages"] == [f"chelsea_fire9_maps_page{n}.png" for n in range(1, 9)]
    assert manifest["files"] == sorted(manifest["pages"])
    assert manifest["layer_alias"] == "fire9" and manifest["shown"] == list(range(512))
    low, high = manifest["scale"]
    assert low == 0.0 and 0 < high < 1121  # the brightest 0.5 % saturate
    for name in manifest["pages"]:
        width, height = Image.open(out / name).size
        assert 8 * 13 * 8 <= width <= 1200 and height <= 1300  # 8 x 8 tiles of 104 px


def test_maps_selects_the_strongest_or_a_list(tmp_path) -> None:
    argv = ["maps", PHOTO, *SQUEEZENET, "--layer", "fire9"]
    assert (
        main([*argv, "--maps", "top:16", "--contrast", "tile", "--out", str(tmp_path / "a")]) == 0
    )
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    model = models.load("squeezenet1_0", "deep-compression")
    x = images.preprocess(images.load_image(PHOTO), model.preprocessing)
    maxima = Deconvnet(model).layer_output(x, "fire9")[0].flatten(1).max(dim=1).values
    assert manifest["shown"] == sorted(torch.topk(maxima, 16).indices.tolist())
    assert manifest["pages"] == ["chelsea_fire9_maps.png"]
    assert main([*argv, "--maps", "0-3,7", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["shown"] == [0, 1, 2, 3, 7]
    assert main([*argv, "--maps", "0-600", "--out", str(tmp_path / "c")]) == 1
