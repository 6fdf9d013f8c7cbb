"""``timm:NAME`` and ``torchvision:NAME`` where the library is absent (this virtualenv: the
README's install has neither), and the parts that need no library: how timm's
``pretrained_cfg`` reads as a Preprocessing, and which specs are library names.

With the libraries installed: tests/models/test_libraries_zoo.py (``pytest -m zoo``).
"""

from __future__ import annotations

import importlib.util

import pytest

import deconvnet.models as zoo
from deconvnet.errors import ModelNotFoundError
from deconvnet.faces.cli import main
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models.libraries import _sha_prefix, is_library_model, timm_preprocessing
from deconvnet.models.own import is_own_model

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_a_missing_library_is_one_clear_line(
    library: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec(library) is not None:
        pytest.skip(f"{library} is installed here")
    with pytest.raises(ModelNotFoundError) as raised:
        zoo.load(f"{library}:resnet50")
    message = str(raised.value)
    assert message == (
        f"{library}:NAME needs {library}, which is not installed here (pip install {library})"
    )
    assert main(["layers", "--model", f"{library}:resnet50"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"deconvnet: error: {message}"


def test_library_names_are_not_own_models() -> None:
    for spec in ("timm:resnet50d", "torchvision:resnet18", "timm:resnet50.a1_in1k"):
        assert is_library_model(spec) and not is_own_model(spec)
    for spec in ("net.py:build", "mypkg.nets:build", "timm:", "keras:resnet50", "alexnet"):
        assert not is_library_model(spec)
    assert is_own_model("mypkg.nets:build") and is_own_model("keras:resnet50")


def test_timm_center_crop_reads_as_torchvisions_rule() -> None:
    """timm's eval transform: shorter side to floor(224 / 0.875) = 256, centre crop 224."""
    config = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875,
              "crop_mode": "center", **IMAGENET}  # fmt: skip
    assert timm_preprocessing(config, "x") == Preprocessing(
        (224, 224), "shorter_then_center_crop", 256, interpolation="bicubic", **IMAGENET
    )
    pct = {**config, "input_size": (3, 288, 288), "crop_pct": 0.95, "interpolation": "bilinear"}
    spec = timm_preprocessing(pct, "x")
    assert (spec.input_size, spec.resize_to, spec.interpolation) == ((288, 288), 303, "bilinear")
    default = timm_preprocessing({**config, "crop_pct": None, "crop_mode": None}, "x")
    assert default.resize_to == 256 and default.resize_rule == "shorter_then_center_crop"


def test_timm_squash_keeps_no_aspect_ratio() -> None:
    config = {"input_size": (3, 192, 192), "interpolation": "bicubic", "crop_pct": 0.9,
              "crop_mode": "squash", **IMAGENET}  # fmt: skip
    spec = timm_preprocessing(config, "dm_nfnet_f0")
    assert (spec.resize_rule, spec.resize_to) == ("squash_then_center_crop", 213)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"crop_mode": "border"}, "crop_mode 'border'"),
        ({"input_size": (3, 256, 192)}, "input 256x192"),
        ({"interpolation": "random"}, "interpolation 'random'"),
    ],
)
def test_timm_transforms_with_no_equivalent_are_refused(change: dict, needle: str) -> None:
    config = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 1.0,
              "crop_mode": "center", **IMAGENET, **change}  # fmt: skip
    with pytest.raises(ModelNotFoundError, match=needle):
        timm_preprocessing(config, "vit_x")


def test_published_file_names_carry_their_digest_prefix() -> None:
    assert _sha_prefix("https://download.pytorch.org/models/resnet18-f37072fd.pth") == "f37072fd"
    assert _sha_prefix("https://example.org/timm/efficientnet_b0_ra-3dd342df.pth") == "3dd342df"
    assert _sha_prefix("https://huggingface.co/timm/x/resolve/main/model.safetensors") is None
    assert _sha_prefix("https://example.org/w-abc.pth") is None  # too short to be checked
