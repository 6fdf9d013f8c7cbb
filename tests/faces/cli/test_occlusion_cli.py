"""occlude / compare / sanity end to end through ``main([...])`` on the default net, random."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.faces.cli import main

RANDOM = ["--model", "default", "--weights", "random"]


def _photo(path: Path) -> Path:
    array = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _decodes(folder: Path, name: str) -> tuple[int, int]:
    with Image.open(folder / name) as image:
        image.load()
        return image.size


def test_occlude_writes_figure_panels_and_manifest(tmp_path):
    out = tmp_path / "occ"
    photo = _photo(tmp_path / "in.png")
    args = ["occlude", str(photo), *RANDOM, "--size", "8", "--stride", "4", "--label", "3"]
    assert main([*args, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == 8 and manifest["stride"] == 4 and manifest["fill"] == [0, 0, 0]
    assert manifest["label"] == 3 and manifest["target_name"] == "class 3"
    # the default layer is the last convolution after its ReLU: totals of activations
    assert manifest["layer"] == "features.11" and manifest["layer_alias"] == "relu4"
    assert manifest["baseline"]["map_total_activation"] >= 0
    assert manifest["input_size"] == [32, 32]
    assert manifest["precision"] == "float32"  # one reverse pass: the API's full precision
    assert len(manifest["positions"]["rows"]) == 7
    assert manifest["files"] == sorted([manifest["figure"], *manifest["panels"].values()])
    for name in manifest["files"]:
        assert min(_decodes(out, name)) > 10


def test_compare_and_sanity_write_pngs_and_manifests(tmp_path):
    photo = _photo(tmp_path / "in.png")
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(photo),
                *RANDOM,
                "--layer",
                "conv2",
                "--select",
                "map:3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"] == "map:3" and sorted(manifest["rules"]) == [
        "gradient",
        "guided",
        "zeiler",
    ]
    assert manifest["seeds"][0]["channel"] == 3
    assert manifest["files"] == [manifest["figure"]]
    _decodes(out, manifest["figure"])
    out = tmp_path / "san"
    assert (
        main(
            [
                "sanity",
                str(photo),
                *RANDOM,
                "--layer",
                "conv2",
                "--select",
                "map:3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"][0]["spearman"] == 1.0 and len(manifest["rows"]) == 3  # conv1, conv2
    assert manifest["seeds"][0].startswith("neuron:3,")
    assert manifest["files"] == [manifest["figure"]]
    _decodes(out, manifest["figure"])


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["occlude", "missing.png"], 1),
        (["occlude", "IMG", "--size", "0"], 2),
        (["occlude", "IMG", "--size", "99"], 1),
        (["occlude", "IMG", "--label", "99"], 1),
        (["occlude", "IMG", "--label", "unicorn"], 1),
        (["occlude", "IMG", "--fill", "bright"], 1),
        (["compare", "IMG", "--select", "nonsense:1"], 2),
        (["sanity", "IMG", "--layer", "nope"], 1),
        (["compare", "IMG", "--layer", "conv2", "--select", "map:999"], 1),
    ],
)
def test_bad_input_is_one_line_and_exit_code(tmp_path, capsys, extra, code):
    photo = _photo(tmp_path / "in.png")
    argv = [str(photo) if a == "IMG" else a for a in extra]
    assert main([*argv, *RANDOM, "--out", str(tmp_path / "o")]) == code
    err = capsys.readouterr().err.strip()
    if code == 1:
        assert err.startswith("deconvnet: error:") and len(err.splitlines()) == 1
