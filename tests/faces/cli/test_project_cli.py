"""The main job end to end through ``main([...])``: files decode, manifest matches the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deconvnet as dn
from deconvnet import models
from deconvnet.faces.cli import main
from deconvnet.inputs import images


def _photo(path: Path, size: tuple[int, int] = (72, 96), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return path


def test_main_job_on_the_bundled_photo(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["project", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "default" and manifest["selection"] == "top:9"
    entry = manifest["images"][0]
    assert Path(entry["image"]).name == "chelsea.png"
    sheet = Image.open(out / entry["sheet"])
    assert sheet.size[0] > 200 and sheet.size[1] > 200
    assert len(entry["projections"]) == 9
    for record in entry["projections"]:
        with Image.open(out / record["file"]) as tile:
            assert min(tile.size) >= 128  # readable on its own
    # The manifest's numbers are the engine's.
    model = models.load("default")
    x = images.preprocess(images.load_image(entry["image"]), model.preprocessing)
    with dn.Deconvnet(model) as net:
        result = net.project(x, manifest["layer"], dn.TopMaps(9))
    assert [r["channel"] for r in entry["projections"]] == result.channels[0].tolist()
    assert [r["position"] for r in entry["projections"]] == result.positions[0].tolist()
    np.testing.assert_allclose(
        [r["value"] for r in entry["projections"]], result.values[0].numpy(), rtol=1e-6
    )
    assert str(out / "manifest.json") in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "F"])
@pytest.mark.parametrize("size", [(40, 40), (33, 71)])
def test_image_modes_and_sizes(tmp_path, mode, size):
    source = _photo(tmp_path / "in.png", size)
    image = Image.open(source).convert(mode)
    path = tmp_path / ("in.tiff" if mode in ("I;16", "F", "CMYK") else "in.png")
    image.save(path)
    out = tmp_path / "out"
    code = main(["project", str(path), "--layer", "conv2", "--select", "map:3", "--out", str(out)])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layer_alias"] == "conv2"
    assert manifest["images"][0]["input_size"] == list(size)


def test_caffe_compat_writes_the_demo_display(tmp_path, shared_data):
    caffenet = shared_data / "caffe" / "caffenet"
    out = tmp_path / "out"
    code = main(
        [
            "project",
            str(_photo(tmp_path / "p.png", (120, 90))),
            "--caffe",
            str(caffenet / "caffenet_conv_deploy.prototxt"),
            str(caffenet / "caffenet_conv.caffemodel"),
            "--compat",
            "caffe-deconvnet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rule"], manifest["lrn"], manifest["collisions"]) == (
        "none",
        "reapply",
        "overwrite",
    )
    assert manifest["layer"] == "pool5" and manifest["selection"] == "threshold:150,rescaled"
    assert Image.open(out / manifest["images"][0]["demo_display"]).size == (227, 227)


def test_layers_lists_receptive_fields(capsys):
    assert main(["layers", "--model", "caffenet"]) == 0
    text = capsys.readouterr().out
    line = next(row for row in text.splitlines() if row.startswith("features.12 (conv5)"))
    assert "256x13x13" in line and "163x163" in line and " 16 " in line


def test_maps_grid(tmp_path):
    out = tmp_path / "maps"
    assert (
        main(["maps", str(_photo(tmp_path / "a.png")), "--layer", "conv1", "--out", str(out)]) == 0
    )
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert Image.open(out / meta["file"]).size[0] > 0 and meta["maps"] > 1


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "text.png").write_text("not an image")
    good = _photo(tmp / "good.jpg", (64, 64))
    data = good.read_bytes()
    (tmp / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (1, 1)).save(tmp / "one.png")
    out = ["--out", str(tmp / "out")]
    return {
        "missing": (["project", str(tmp / "nope.png"), *out], 1, "nope.png"),
        "zero bytes": (["project", str(tmp / "empty.png"), *out], 1, "empty.png"),
        "text as png": (["project", str(tmp / "text.png"), *out], 1, "text.png"),
        "truncated": (["project", str(tmp / "truncated.jpg"), *out], 1, "truncated.jpg"),
        "1x1 image": (["project", str(tmp / "one.png"), *out], 1, "forward pass failed"),
        "unknown model": (
            ["project", "--model", "resnet9000", *out],
            1,
            "unknown model 'resnet9000'; known models: alexnet",
        ),
        "unknown layer": (
            ["project", str(good), "--layer", "conv99", *out],
            1,
            "no layer 'conv99'",
        ),
        "bad select": (
            ["project", str(good), "--select", "top:x", *out],
            2,
            "cannot read --select",
        ),
        "channel range": (["project", str(good), "--select", "map:9999", *out], 1, "out of range"),
        "missing weights": (
            ["project", str(good), "--weights", str(tmp / "w.pth"), *out],
            1,
            "w.pth",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "zero bytes",
        "text as png",
        "truncated",
        "1x1 image",
        "unknown model",
        "unknown layer",
        "bad select",
        "channel range",
        "missing weights",
    ],
)
def test_bad_input_gives_one_line_and_exit_code(tmp_path, capsys, case):
    argv, code, needle = _bad_inputs(tmp_path)[case]
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert needle in err
    if code == 1:
        assert len(err.splitlines()) == 1 and err.startswith("deconvnet: error:")
        assert "Traceback" not in err


def test_huge_image_is_refused_by_the_bomb_guard(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = _photo(tmp_path / "big.png", (64, 64))
    assert main(["project", str(path), "--out", str(tmp_path / "o")]) == 1
    assert "big.png" in capsys.readouterr().err


def test_help_shows_examples(capsys):
    assert main(["project", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_cuda_request_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert main(["project", "--device", "cuda", "--out", str(tmp_path)]) == 1
    assert "CUDA is not available" in capsys.readouterr().err
