"""``--model timm:NAME`` and ``--model torchvision:NAME`` from the command line, with the
real libraries (``pytest -m zoo``, CI's second virtualenv), random weights and a weights
file; offline, no download.

Oracles: the library API on the same model and file (values, channels), the library's own
config (preprocessing in the manifest), receptive fields worked by hand for ResNet-18.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import deconvnet as dn
import deconvnet.models as zoo
from deconvnet.faces.cli import main
from deconvnet.inputs.images import bundled_photo, load_image, preprocess
from deconvnet.models.card import card_of

pytestmark = pytest.mark.zoo
EFFICIENTNET = "timm:efficientnet_b0"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """The bundled cat as the JPEG a user would bring."""
    path = tmp_path / "photo.jpg"
    Image.open(bundled_photo()).convert("RGB").save(path, quality=92)
    return path


def test_efficientnet_under_the_default_rule_is_refused_naming_the_module(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("timm")
    out = tmp_path / "out"
    assert main(["project", str(photo), "--model", EFFICIENTNET, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "SiLU" in err and "bn1.act" in err  # the first SiLU on the way down


def test_efficientnet_projects_with_random_weights(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("timm")
    out = tmp_path / "out"
    argv = ["project", str(photo), "--model", EFFICIENTNET, "--rule", "gradient"]
    assert main([*argv, "--select", "top:3", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == EFFICIENTNET and manifest["weights"] == "random"
    assert manifest["weights_sha256"] is None
    assert manifest["layer"] == "conv_head"  # the last convolution
    prep = manifest["preprocessing"]
    assert prep["interpolation"] == "bicubic" and prep["input_size"] == [224, 224]
    assert prep["resize_rule"] == "shorter_then_center_crop" and prep["resize_to"] == 256
    assert (out / "00_photo_sheet.png").is_file()
    assert len(manifest["images"][0]["projections"]) == 3


def test_efficientnet_with_a_weights_file(photo: Path, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    weights = tmp_path / "efficientnet_b0.pth"
    torch.save(zoo.load(EFFICIENTNET, seed=11).state_dict(), weights)
    out = tmp_path / "out"
    argv = ["project", str(photo), "--model", EFFICIENTNET, "--weights", str(weights)]
    argv += ["--rule", "gradient", "--layer", "blocks.5.0.conv_pw", "--select", "top:2"]
    assert main([*argv, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == str(weights)
    assert manifest["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    model = zoo.load(EFFICIENTNET, weights)  # the library on the same file
    x = preprocess(load_image(photo), card_of(model).preprocessing)
    expected = dn.Deconvnet(model, "gradient").project(x, "blocks.5.0.conv_pw", dn.TopMaps(2))
    projections = manifest["images"][0]["projections"]
    assert [p["channel"] for p in projections] == expected.channels[0].tolist()
    values = torch.tensor([p["value"] for p in projections])
    torch.testing.assert_close(values, expected.values[0], rtol=1e-5, atol=0)


def test_a_weights_file_for_another_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torchvision")
    weights = tmp_path / "resnet34.pth"
    torch.save(zoo.load("torchvision:resnet34", seed=0).state_dict(), weights)
    assert main(["layers", "--model", "torchvision:resnet18", "--weights", str(weights)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit ResNet: unexpected keys" in err


def test_layers_of_a_torchvision_model(capsys: pytest.CaptureFixture[str]) -> None:
    """ResNet-18's stem worked by hand: conv1 7x7/2 pad 3 -> 7, stride 2, centre 0;
    maxpool 3x3/2 pad 1 -> 7 + 2*2 = 11, stride 4, centre 0 + (1 - 1)*2 = 0; layer1's
    first 3x3 conv -> 11 + 2*4 = 19."""
    pytest.importorskip("torchvision")
    assert main(["layers", "--model", "torchvision:resnet18"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("torchvision:resnet18: input 3x224x224")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["conv1"][1:5] == ["Conv2d", "64x112x112", "7x7", "2"]
    assert rows["maxpool"][1:5] == ["MaxPool2d", "64x56x56", "11x11", "4"]
    assert rows["layer1.0.conv1"][1:5] == ["Conv2d", "64x56x56", "19x19", "4"]
    assert rows["fc"][1:3] == ["Linear", "1000"]
