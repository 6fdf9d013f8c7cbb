"""``deconvnet compare --select top:3`` (issue 23, item 5): one row per seed, one column per
rule, each row cut to its own seed's receptive field, one display.

Oracle: SqueezeNet's fire9 receptive field from the engine's tracer at each seed's
position."""

from __future__ import annotations

import json

from PIL import Image

from deconvnet import models
from deconvnet.engine.receptive import receptive_fields
from deconvnet.faces.cli import main

SQUEEZENET = ["--model", "squeezenet1_0", "--weights", "deep-compression", "--layer", "fire9"]


def test_top3_is_three_rows_each_with_its_own_receptive_field(tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["compare", *SQUEEZENET, "--select", "top:3", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    field = receptive_fields(models.load("squeezenet1_0", "deep-compression"), (1, 3, 227, 227))
    boxes = [seed["box"] for seed in manifest["seeds"]]
    assert boxes == [
        list(field["features.12"].box(*seed["position"])) for seed in manifest["seeds"]
    ]
    assert len({tuple(box) for box in boxes}) == 3
    for seed in manifest["seeds"]:
        assert set(seed["largest_magnitude"]) == {"zeiler", "guided", "gradient"}
    from deconvnet.figures.compare import TILE  # the tile side of a row

    width, height = Image.open(out / manifest["figure"]).size
    assert height < 3 * (TILE + 60) + 300 and width < 5 * (TILE + 40)
    assert manifest["display"] == "rgb" and manifest["contrast"] == "tile"
    argv = ["compare", *SQUEEZENET, "--select", "top:2", "--display", "signed"]
    assert main([*argv, "--contrast", "shared", "--out", str(tmp_path / "b")]) == 0
