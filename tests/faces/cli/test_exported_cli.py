"""``--model MODEL.pt2`` as a new user meets it: the input size from the archive (not
224×224), readable layer classes, the last convolution's rectifier by default, a batch-1
export through every batching command, a fixed batch of several images refused before any
scan, and nothing on stderr.

Oracle: the eager module the archive was exported from, run by the library on the input
the archive's size describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deconvnet as dn
from deconvnet.engine.receptive import receptive_fields
from deconvnet.faces.cli import main
from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION

HEIGHT, WIDTH = 48, 64


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).eval()  # fmt: skip


def _export(path: Path, batch: int) -> str:
    program = torch.export.export(_net(), (torch.randn(batch, 3, HEIGHT, WIDTH),))
    torch.export.save(program, path)
    return str(path)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        pixels = np.random.default_rng(i).integers(0, 256, (60, 90, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_layers_reads_size_classes_and_fields_from_the_archive(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    archive = _export(tmp_path / "net.pt2", 1)
    capfd.readouterr()
    assert main(["layers", "--model", archive]) == 0
    out, err = capfd.readouterr()
    assert err == ""
    assert f"input 3x{HEIGHT}x{WIDTH}" in out and "InterpreterModule" not in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["0"][1] == "Conv2d" and rows["0"][3] == "5x5"  # a 5x5 conv, not 1x1
    assert rows["2"][1] == "MaxPool2d" and rows["2"][3] == "7x7"  # not "global"
    assert rows["3"][3] == "11x11"


def test_project_uses_the_archives_size_and_last_convolutions_rectifier(
    tmp_path: Path, photos: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    archive = _export(tmp_path / "net.pt2", 1)
    capfd.readouterr()
    photo = photos / "0.png"
    argv = ["project", str(photo), "--model", archive, "--select", "top:3"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    assert capfd.readouterr().err == ""
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["layer"] == "4"  # the last convolution's rectifier, as for the eager net
    assert manifest["preprocessing"]["input_size"] == [HEIGHT, WIDTH]
    # the library on the eager module, fed what the archive's size describes
    spec = dn.Preprocessing(
        (HEIGHT, WIDTH),
        "shorter_then_center_crop",
        resize_to=round(HEIGHT * 256 / 224),
        mean=IMAGENET_TORCHVISION.mean,
        std=IMAGENET_TORCHVISION.std,
    )
    x = dn.images.preprocess(dn.images.load_image(photo), spec)
    result = dn.Deconvnet(_net()).project(x, "3", dn.TopMaps(3))
    field = receptive_fields(_net(), (1, 3, HEIGHT, WIDTH))["3"]
    projections = manifest["images"][0]["projections"]
    assert [p["channel"] for p in projections] == result.channels[0].tolist()
    np.testing.assert_allclose([p["value"] for p in projections], result.values[0], rtol=1e-5)
    for entry, position in zip(projections, result.positions[0].tolist(), strict=True):
        box = field.box(*position)  # unclipped, as the manifest records it
        assert entry["receptive_field_box"] == list(box)
        assert box[2] - box[0] < HEIGHT  # a real field, not the whole input


def test_a_batch_1_export_runs_every_batching_command(tmp_path: Path, photos: Path) -> None:
    """Before: topk scanned at --batch-size 1 and then failed projecting a group of
    images after the whole scan; occlusion failed on its batches of 32. The projection
    stage runs one image per call and still one reverse pass per projection."""
    archive = _export(tmp_path / "net.pt2", 1)
    argv = ["topk", str(photos), "--model", archive, "--layers", "3", "--k", "2", "--maps", "2"]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 0  # default --batch-size
    index = json.loads((tmp_path / "t" / "topk_index.json").read_text())
    assert len(index["entries"]) == 2 * 2
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["reverse_passes"] == manifest["projections"] == 2 * 2  # one image per call
    occlude = ["occlude", str(photos / "0.png"), "--model", archive, "--layer", "3"]
    assert main([*occlude, "--size", "16", "--stride", "16", "--out", str(tmp_path / "o")]) == 0


def test_a_fixed_batch_of_several_is_refused_before_any_scan(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _export(tmp_path / "net.pt2", 2)
    out = tmp_path / "t"
    argv = ["topk", str(photos), "--model", archive, "--layers", "3", "--k", "2"]
    assert main([*argv, "--batch-size", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "only batches of exactly 2" in err and "dynamic" in err
    assert not any(out.glob("topk_*")) if out.exists() else True  # no checkpoint, no index
    project = ["project", str(photos / "0.png"), "--model", archive, "--layer", "3"]
    assert main([*project, "--out", str(tmp_path / "p")]) == 1
    assert "runs only batches of 2, got 1 image(s)" in capsys.readouterr().err


def test_flags_that_do_not_fit_a_fixed_input_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _export(tmp_path / "net.pt2", 1)
    assert main(["layers", "--model", archive, "--input-size", "224"]) == 1
    err = capsys.readouterr().err
    assert f"takes only {HEIGHT}x{WIDTH} inputs" in err and len(err.strip().splitlines()) == 1
    assert main(["layers", "--model", archive, "--input-size", str(HEIGHT), str(WIDTH)]) == 0
