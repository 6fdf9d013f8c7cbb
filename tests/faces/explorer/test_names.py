"""The explorer names layers as the rest of the tool does (issue 23, item 1): every alias the
model declares is in the menu, SqueezeNet's concatenated fire outputs included, grouped by
block, addressed by alias or dotted name; class maps carry class names; the scan's unit
pages link at the same names. Item 7: an inactive unit says so; top-k captions keep the
class folder.

Oracles: the model's own alias table and category list, and the layer's output read with
the engine (a unit whose value is exactly 0 is the one clicked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from deconvnet import Deconvnet
from deconvnet.engine.receptive import layer_table
from tests.faces.explorer.conftest import LOCAL, SQUEEZENET_SCAN_K


@pytest.fixture(scope="module")
def squeezenet_client(squeezenet_app) -> TestClient:
    return TestClient(squeezenet_app, base_url=LOCAL)


def test_every_declared_alias_with_maps_is_in_the_menu_grouped_by_block(
    squeezenet, squeezenet_client: TestClient
) -> None:
    info = squeezenet_client.get("/api/model").json()
    layers = {layer["name"]: layer for layer in info["layers"]}
    with_maps = {
        row.name
        for row in layer_table(squeezenet, (1, 3, 227, 227))
        if row.output_shape is not None and len(row.output_shape) == 4
    }
    declared = {alias for alias, target in squeezenet.layer_aliases.items() if target in with_maps}
    assert {f"fire{n}" for n in range(2, 10)} <= declared
    assert declared <= set(layers), declared - set(layers)
    assert layers["fire5"]["module"] == "features.7" and layers["fire5"]["group"] == "fire5"
    inner = layers["features.7.squeeze_activation"]
    assert inner["group"] == "fire5" and inner["module"] == inner["name"]
    assert layers["pool4"]["group"] is None and layers["conv1"]["group"] is None
    names = list(layers)  # the block's own output comes first in its group
    assert names.index("fire5") < names.index("features.7.squeeze") < names.index("pool8")
    assert not any(name.startswith("features.") and name.count(".") == 1 for name in names)


def test_the_default_is_the_last_convolution_and_class_maps_carry_class_names(
    squeezenet, squeezenet_client: TestClient, photos: Path
) -> None:
    info = squeezenet_client.get("/api/model").json()
    assert info["default_layer"] == "relu10"  # conv10 after its ReLU
    assert info["scanned"] == ["fire2"]
    layers = {layer["name"]: layer for layer in info["layers"]}
    assert layers["relu10"]["classes"] and layers["conv10"]["classes"]
    assert not layers["fire9"]["classes"]
    image = squeezenet_client.post("/api/open", json={"name": "photo_1.png"}).json()
    grid = squeezenet_client.get(f"/api/images/{image['id']}/layers/conv10").json()
    assert grid["classes"][281] == "tabby" and len(grid["classes"]) == 1000
    unit = squeezenet_client.get(f"/api/images/{image['id']}/layers/conv10/units/281").json()
    assert unit["class_name"] == "tabby" and unit["layer"] == "conv10"
    fire = squeezenet_client.get(f"/api/images/{image['id']}/layers/fire9").json()
    assert fire["classes"] is None


@pytest.mark.parametrize("address", ["fire5", "features.7"])
def test_a_fire_output_is_reachable_by_alias_or_dotted_name(
    squeezenet_client: TestClient, address: str
) -> None:
    image = squeezenet_client.post("/api/open", json={"name": "photo_0.png"}).json()
    grid = squeezenet_client.get(f"/api/images/{image['id']}/layers/{address}")
    assert grid.status_code == 200, grid.text
    assert grid.json()["layer"] == "fire5" and grid.json()["channels"] == 256
    assert "/layers/fire5/grid.png" in grid.json()["grid_url"]
    unit = squeezenet_client.get(f"/api/images/{image['id']}/layers/{address}/units/3").json()
    assert unit["layer"] == "fire5" and "/layers/fire5/units/3/" in unit["projection_url"]
    assert squeezenet_client.get(unit["projection_url"]).status_code == 200


def test_the_scan_link_of_a_fire_map_opens_its_unit_page(
    squeezenet_client: TestClient, squeezenet_scan: Path, photos: Path
) -> None:
    image = squeezenet_client.post("/api/open", json={"name": "photo_3.png"}).json()
    index = (squeezenet_scan / "topk_index.json").read_text()
    channel = next(m for m in range(128) if f'"map": {m},' in index)
    unit = squeezenet_client.get(f"/api/images/{image['id']}/layers/fire2/units/{channel}").json()
    assert unit["unit_page"] == f"/site/layers/fire2/units/{channel}.html"
    page = squeezenet_client.get(unit["unit_page"])
    assert page.status_code == 200 and f"fire2 · map {channel}" in page.text
    assert len(unit["topk"]) == SQUEEZENET_SCAN_K
    for entry in unit["topk"]:  # the image's folder (its class, in most datasets) is kept
        assert entry["image"].startswith(f"{photos.name}/photo_")
        assert squeezenet_client.get(entry["projection_url"]).status_code == 200


def test_a_click_on_a_unit_that_did_not_fire_says_it_is_inactive(
    client_default: TestClient, default_model, photos: Path
) -> None:
    from deconvnet.inputs.prepared import prepare

    image = client_default.post("/api/open", json={"name": "photo_4.png"}).json()
    x = prepare(photos / "photo_4.png", default_model.preprocessing, torch.device("cpu")).tensor
    with Deconvnet(default_model) as net:
        maps = net.layer_output(x, "relu2")[0]
    channel, y, x_pos = (int(v) for v in (maps == 0).nonzero()[0])
    base = f"/api/images/{image['id']}/layers/relu2/units/{channel}"
    unit = client_default.get(f"{base}?y={y}&x={x_pos}").json()
    assert unit["value"] == 0 and "inactive" in unit["note"]
    strongest = client_default.get(base).json()
    assert strongest["value"] > 0 and strongest["note"] is None


@pytest.fixture(scope="module")
def client_default(app) -> TestClient:
    return TestClient(app, base_url=LOCAL)


def test_a_blank_projection_says_where_its_signal_died(squeezenet_client: TestClient) -> None:
    from deconvnet.inputs.images import PHOTO_DIR

    data = (PHOTO_DIR / "chelsea.png").read_bytes()
    files = {"file": ("chelsea.png", data, "image/png")}
    image = squeezenet_client.post("/api/upload", files=files).json()
    unit = squeezenet_client.get(f"/api/images/{image['id']}/layers/pool10/units/285").json()
    assert unit["class_name"] == "Egyptian cat" and unit["value"] > 0
    assert unit["note"].startswith("blank: the zeiler signal from pool10 is zero below fire")
    assert unit["note"].endswith("guided reaches the pixels")
    guided = squeezenet_client.get(
        f"/api/images/{image['id']}/layers/pool10/units/285?rule=guided"
    ).json()
    assert guided["note"] is None
