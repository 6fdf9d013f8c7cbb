"""``--activations strict|relu-like`` on every sub-command that projects: the refusal names
the module and the flag, the option reaches the engine (the projection equals the
library's), and every manifest records the policy."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import deconvnet as dn
from deconvnet.faces.cli import main
from tests.faces.conftest import make_photos

SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
            self.gate = nn.Sigmoid()

        def forward(self, x):
            return x * self.gate(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))

    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), SE(8),
            nn.Conv2d(8, 6, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
        )
    """
)
FLAGS = ["--input-size", "24", "--mean", "0.5", "--std", "0.25", "--scale", "1", "--layer", "4"]
SELECT = ["--select", "top:2"]


@pytest.fixture
def silu_net(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "silunet.py").write_text(SOURCE)
    folder = make_photos(tmp_path / "photos", 3)
    return {"model": tmp_path / "silunet.py", "photo": folder / "photo_0.png", "folder": folder}


def _model(silu_net: dict[str, Path]) -> str:
    return f"{silu_net['model']}:build"


def test_strict_refuses_naming_the_module_and_the_flag(silu_net, tmp_path, capsys) -> None:
    argv = ["project", str(silu_net["photo"]), "--model", _model(silu_net), *FLAGS, *SELECT]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "sigmoid in module 3.gate (Sigmoid)" in error
    assert "--activations relu-like" in error


def test_project_relu_like_equals_the_library_and_records_the_policy(silu_net, tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["project", str(silu_net["photo"]), "--model", _model(silu_net), *FLAGS]
    assert main([*argv, "--select", "top:2", "--activations", "relu-like", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["activations"] == "relu-like" and manifest["rule"] == "zeiler"
    namespace: dict[str, object] = {}
    exec(SOURCE, namespace)
    model = namespace["build"]().eval()  # type: ignore[operator]
    resize = dn.Preprocessing((24, 24), "shorter_then_center_crop", resize_to=27)
    rgb = dn.images.resized_rgb(dn.images.load_image(silu_net["photo"]), resize)
    x = ((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - 0.5) / 0.25)[None]
    with dn.Deconvnet(model, activations="relu-like") as net:
        expected = net.project(x, layer="4", select=dn.TopMaps(2))
    got = [(r["channel"], r["position"]) for r in manifest["images"][0]["projections"]]
    wanted = [
        (int(expected.channels[0, k]), [int(p) for p in expected.positions[0, k]]) for k in range(2)
    ]
    assert got == wanted
    values = [r["value"] for r in manifest["images"][0]["projections"]]
    np.testing.assert_allclose(values, expected.values[0].numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("compare", SELECT),
        ("sanity", ["--rule", "guided", *SELECT]),
        ("topk", ["--layers", "4", "--k", "2", "--maps", "all"]),
        ("occlude", ["--size", "8", "--stride", "8"]),
    ],
)
def test_each_command_takes_the_flag_and_records_it(silu_net, tmp_path, command, extra) -> None:
    out = tmp_path / command
    target = [str(silu_net["folder"])] if command == "topk" else [str(silu_net["photo"])]
    flags = [f for f in FLAGS if command != "topk" or f not in ("--layer", "4")]
    argv = [command, *target, "--model", _model(silu_net), *flags, *extra]
    assert main([*argv, "--out", str(out / "strict")]) == 1  # SiLU, gate, GELU: refused
    assert main([*argv, "--activations", "relu-like", "--out", str(out / "relu")]) == 0
    manifest = json.loads((out / "relu" / "manifest.json").read_text())
    recorded = manifest.get("activations") or manifest.get("metadata", {}).get("activations")
    assert recorded == "relu-like"


def test_the_option_is_offered_with_its_choices(capsys) -> None:
    for command in ("project", "topk", "evolve", "sanity", "compare", "occlude", "serve"):
        assert main([command, "--help"]) == 0
        assert re.search(r"--activations\s+\{strict,relu-like\}", capsys.readouterr().out), command


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("project", SELECT),
        ("compare", SELECT),
        ("topk", ["--layers", "4", "--k", "2", "--maps", "all"]),
        ("occlude", ["--size", "8", "--stride", "8"]),
    ],
)
def test_each_figure_says_relu_like(silu_net, tmp_path, monkeypatch, command, extra) -> None:
    """The text drawn on each figure (titles, headers, captions) names the policy."""
    from deconvnet.figures import compare, panels, projection, topk

    drawn: list[str] = []
    for module, name in [
        (projection, "draw_text"),
        (compare, "draw_text"),
        (topk, "draw_text"),
        (panels, "text_image"),
    ]:
        original = getattr(module, name)

        def spy(*args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            drawn.append(" ".join(str(a) for a in args if isinstance(a, str)))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    target = [str(silu_net["folder"])] if command == "topk" else [str(silu_net["photo"])]
    flags = [f for f in FLAGS if command != "topk" or f not in ("--layer", "4")]
    argv = [command, *target, "--model", _model(silu_net), *flags, *extra]
    assert main([*argv, "--activations", "relu-like", "--out", str(tmp_path / "out")]) == 0
    text = " ".join(" ".join(drawn).split())
    assert "relu-like activations" in text
