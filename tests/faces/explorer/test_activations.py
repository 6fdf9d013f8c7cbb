"""The explorer on a SiLU network: ``serve --activations relu-like`` projects it (strict
refuses it as a one-line JSON error naming the module and the flag), and the model info
says which policy every projection uses."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("fastapi", reason="the explorer extra is not installed")
from fastapi.testclient import TestClient

from deconvnet import Deconvnet, Neuron, Preprocessing
from deconvnet.engine.precision import FACES_PRECISION
from deconvnet.faces.explorer.app import create_app
from deconvnet.faces.explorer.session import Explorer
from deconvnet.figures.render import show
from deconvnet.inputs.prepared import prepare
from tests.faces.explorer.conftest import LOCAL


def _silu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU()
    ).eval()


def _client(model: nn.Module, photos: Path, activations: str | None) -> TestClient:
    preprocessing = Preprocessing((32, 32), "exact")
    explorer = Explorer(
        model, preprocessing, name="silu", images_dir=photos, activations=activations
    )
    return TestClient(create_app(explorer), base_url=LOCAL)


@pytest.mark.parametrize("activations", [None, "relu-like"])
def test_the_explorer_projects_under_its_policy(photos: Path, activations: str | None) -> None:
    model = _silu_net()
    client = _client(model, photos, activations)
    info = client.get("/api/model").json()
    assert info["activations"] == (activations or "strict")
    image = client.post("/api/open", json={"name": "photo_1.png"}).json()
    response = client.get(f"/api/images/{image['id']}/layers/2/units/3")
    if activations is None:
        assert response.status_code == 400
        error = response.json()["error"]
        assert "module 1 (SiLU)" in error and "--activations relu-like" in error
        return
    unit = response.json()
    x = prepare(photos / "photo_1.png", Preprocessing((32, 32), "exact"), torch.device("cpu"))
    y, x_pos = unit["position"]
    # in the faces' precision, as the explorer projects
    with Deconvnet(model, "zeiler", activations="relu-like", precision=FACES_PRECISION) as net:
        expected = net.project(x.tensor, "2", Neuron(3, y, x_pos)).images[0, 0]
    png = client.get(unit["projection_url"]).content
    got = np.asarray(Image.open(io.BytesIO(png)))
    np.testing.assert_array_equal(got, show(expected, "rgb"))
