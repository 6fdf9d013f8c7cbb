"""Your own model from the command line: FILE.py:FACTORY, package.module:FACTORY, .pt2 and
pickles, with preprocessing flags recorded in the manifest.

Oracle: the library on the same module, fed the input the flags describe, written out here.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deconvnet as dn
from deconvnet.faces.cli import main

SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
        )

    def not_a_model():
        return 42
    """
)
FLAGS = ["--input-size", "24", "--mean", "0.5", "--std", "0.25", "--scale", "1"]


@pytest.fixture
def own(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "mynet.py").write_text(SOURCE)
    package = tmp_path / "ownpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(SOURCE)
    array = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "photo.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return {"source": tmp_path / "mynet.py", "photo": tmp_path / "photo.png", "folder": folder}


def _built() -> torch.nn.Module:
    namespace: dict[str, object] = {}
    exec(SOURCE, namespace)  # the same factory the CLI imports
    model = namespace["build"]()  # type: ignore[operator]
    assert isinstance(model, torch.nn.Module)
    return model.eval()


def _expected_input(photo: Path) -> torch.Tensor:
    """The flags written out on torchvision's resizing (shorter side 24 * 256 / 224 = 27,
    centre crop 24): [0, 1] RGB, (x - 0.5) / 0.25."""
    resize = dn.Preprocessing((24, 24), "shorter_then_center_crop", resize_to=27)
    rgb = dn.images.resized_rgb(dn.images.load_image(photo), resize)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return ((x - 0.5) / 0.25)[None]


def _project(model_spec: str, own: dict[str, Path], out: Path, *extra: str) -> dict:
    argv = ["project", str(own["photo"]), "--model", model_spec, *FLAGS, "--layer", "4"]
    assert main([*argv, "--select", "top:3", "--out", str(out), *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


def _check_against_library(manifest: dict, own: dict[str, Path]) -> None:
    x = _expected_input(own["photo"])
    result = dn.Deconvnet(_built()).project(x, "4", dn.TopMaps(3))
    entry = manifest["images"][0]
    assert [r["channel"] for r in entry["projections"]] == result.channels[0].tolist()
    np.testing.assert_allclose(
        [r["value"] for r in entry["projections"]], result.values[0].numpy(), rtol=1e-5
    )


def test_file_factory_through_project_topk_occlude(own: dict[str, Path], tmp_path: Path) -> None:
    spec = f"{own['source']}:build"
    manifest = _project(spec, own, tmp_path / "p")
    _check_against_library(manifest, own)
    assert manifest["model"] == spec and manifest["weights"] == "own"
    assert manifest["preprocessing_flags"] == {
        "input_size": [24],
        "mean": "0.5",
        "std": "0.25",
        "scale": 1.0,
    }
    prep = manifest["preprocessing"]
    assert prep["input_size"] == [24, 24] and prep["mean"] == [0.5] * 3
    assert prep["std"] == [0.25] * 3 and prep["resize_rule"] == "shorter_then_center_crop"
    topk_argv = ["topk", str(own["folder"]), "--model", spec, *FLAGS, "--layers", "4"]
    assert main([*topk_argv, "--k", "2", "--maps", "2", "--out", str(tmp_path / "t")]) == 0
    index = json.loads((tmp_path / "t" / "topk_index.json").read_text())
    assert len(index["entries"]) == 2 * 2
    occlude_argv = ["occlude", str(own["photo"]), "--model", spec, *FLAGS, "--layer", "4"]
    assert main([*occlude_argv, "--size", "8", "--stride", "8", "--out", str(tmp_path / "o")]) == 0
    occlusion = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert occlusion["layer"] == "4" and occlusion["preprocessing_flags"]["mean"] == "0.5"


def test_package_module_factory(
    own: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _check_against_library(_project("ownpkg.nets:build", own, tmp_path / "p"), own)


def test_exported_archive_through_project_topk_occlude(
    own: dict[str, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "mynet.pt2"
    batch = {0: torch.export.Dim.DYNAMIC}  # topk and occlusion run batches
    program = torch.export.export(_built(), (torch.randn(2, 3, 24, 24),), dynamic_shapes=(batch,))
    torch.export.save(program, archive)
    manifest = _project(str(archive), own, tmp_path / "p")
    _check_against_library(manifest, own)
    assert len(manifest["weights_sha256"]) == 64
    topk_argv = ["topk", str(own["folder"]), "--model", str(archive), *FLAGS, "--layers", "4"]
    assert main([*topk_argv, "--k", "2", "--maps", "2", "--out", str(tmp_path / "t")]) == 0
    occlude_argv = ["occlude", str(own["photo"]), "--model", str(archive), *FLAGS]
    assert main([*occlude_argv, "--layer", "4", "--size", "8", "--out", str(tmp_path / "o")]) == 0


def test_pickles_only_when_asked(
    own: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pickled = tmp_path / "whole.pt"
    torch.save(_built(), pickled)
    argv = ["project", str(own["photo"]), "--model", str(pickled), *FLAGS, "--layer", "4"]
    argv += ["--select", "top:2"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1
    assert "--unsafe-pickle" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="runs any code"):
        assert main([*argv, "--unsafe-pickle", "--out", str(tmp_path / "b")]) == 0


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("{dir}/missing.py:build", "does not exist"),
        ("{dir}/mynet.py:nope", "no callable 'nope'"),
        ("{dir}/mynet.py:not_a_model", "gave a int, not a torch.nn.Module"),
        ("no_such_package_xyz.mod:build", "cannot import module"),
        ("{dir}/broken.pt2", "torch.export archive"),
    ],
)
def test_bad_model_specs_are_one_line(
    own: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, needle: str
) -> None:
    (tmp_path / "broken.pt2").write_bytes(b"not a zip")
    argv = ["layers", "--model", spec.format(dir=tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_bad_preprocessing_flags(own: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"{own['source']}:build"
    assert main(["layers", "--model", spec, "--mean", "1,2"]) == 1
    assert "--mean needs 3 value(s)" in capsys.readouterr().err
    assert main(["layers", "--model", spec, "--scale", "0"]) == 2  # a usage error
    assert "argument --scale: must be a decimal number from" in capsys.readouterr().err
