"""The explorer's HTTP routes: results checked against the model itself, bad input as 4xx.

Oracles: the activation a click reports is read from the model's own layers (``features[:5]``
on the same input, a literal slice, no engine); the map's strongest unit is NumPy's first
argmax; the receptive-field box of conv2 is written out by hand (15x15 at stride 2, centre
of unit (0, 0) at pixel 1); the projection PNG equals the engine's projection drawn by the
figures room (exact, same float32 computation).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from deconvnet import Deconvnet, Neuron
from deconvnet.engine.precision import FACES_PRECISION, dtype_name, reverse_dtype
from deconvnet.faces.cli import main
from deconvnet.faces.explorer.app import create_app
from deconvnet.faces.explorer.files import file_inside
from deconvnet.faces.explorer.security import JsonErrorsH11Protocol
from deconvnet.figures.render import show
from deconvnet.inputs.prepared import prepare
from deconvnet.instruments.circuits import image_circuit
from tests.faces.conftest import SCAN_LAYER, SCAN_SHOWN
from tests.faces.explorer.conftest import LOCAL, make_explorer


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url=LOCAL)


def png_file(width: int = 40, height: int = 40, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, name: str = "x.png"):
    return client.post("/api/upload", files={"file": (name, data, "image/png")})


def assert_error(response, status: int, needle: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and needle in body["error"]


def test_model_info_lists_leaf_layers_with_maps(client: TestClient) -> None:
    info = client.get("/api/model").json()
    names = [layer["name"] for layer in info["layers"]]
    modules = [layer["module"] for layer in info["layers"]]
    assert SCAN_SHOWN in names and SCAN_LAYER in modules and SCAN_LAYER not in names
    assert "features" not in modules and "classifier.1" not in modules
    assert info["default_layer"] == "relu4" and info["site"] is True
    assert info["images"] == [f"photo_{i}.png" for i in range(6)]


def test_click_projects_the_strongest_unit_with_the_models_own_value(
    client: TestClient, default_model, photos: Path
) -> None:
    image = client.post("/api/open", json={"name": "photo_2.png"}).json()
    grid = client.get(f"/api/images/{image['id']}/layers/{SCAN_LAYER}").json()
    # the default model is fully convolutional: a 48 px photo gives conv2 maps of 24x24
    assert (grid["channels"], grid["height"], grid["width"], grid["columns"]) == (96, 24, 24, 10)
    picture = Image.open(io.BytesIO(client.get(grid["grid_url"]).content))
    assert picture.size == (10 * 25, 10 * 25)  # 10 columns of 24 + 1 padding, 10 rows
    x = prepare(photos / "photo_2.png", default_model.preprocessing, torch.device("cpu")).tensor
    with torch.no_grad():
        maps = default_model.features[:5](x)[0].numpy()
    unit = client.get(f"/api/images/{image['id']}/layers/{SCAN_LAYER}/units/7").json()
    flat = int(np.argmax(maps[7]))
    y, x_pos = flat // 24, flat % 24
    assert unit["position"] == [y, x_pos]
    assert unit["value"] == pytest.approx(float(maps[7, y, x_pos]), rel=1e-5)
    centre_y, centre_x = 1 + 2 * y, 1 + 2 * x_pos
    box = [centre_y - 7, centre_x - 7, centre_y + 8, centre_x + 8]
    assert unit["box"] == [max(0, box[0]), max(0, box[1]), min(48, box[2]), min(48, box[3])]
    assert unit["layer"] == SCAN_SHOWN and grid["layer"] == SCAN_SHOWN
    assert unit["unit_page"] == f"/site/layers/{SCAN_SHOWN}/units/7.html"
    assert len(unit["topk"]) == 3
    png = client.get(unit["projection_url"]).content
    ran = dtype_name(reverse_dtype(FACES_PRECISION, torch.float32, torch.device("cpu")))
    assert unit["precision"] == ran  # the faces' default, resolved for this machine
    with Deconvnet(default_model, "zeiler", precision=FACES_PRECISION) as net:
        expected = show(net.project(x, SCAN_LAYER, Neuron(7, y, x_pos)).images[0, 0], "rgb")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
    guided = client.get(unit["projection_url"].replace("rule=zeiler", "rule=guided")).content
    assert guided != png


def test_clicked_pixel_is_that_unit(client: TestClient) -> None:
    image = upload(client, png_file(seed=3)).json()
    url = f"/api/images/{image['id']}/layers/{SCAN_LAYER}/units/2?y=4&x=9"
    assert client.get(url).json()["position"] == [4, 9]
    assert_error(client.get(url.replace("&x=9", "")), 422, "both y and x")


def test_bad_input_is_a_one_line_json_4xx(client: TestClient) -> None:
    image = upload(client, png_file(seed=1)).json()
    base = f"/api/images/{image['id']}/layers"
    assert_error(client.get(f"{base}/nope"), 404, "no such layer")
    assert_error(client.get(f"{base}/conv22"), 404, "did you mean conv2")
    assert_error(client.get(f"{base}/{SCAN_LAYER}/units/96"), 404, "maps 0..95")
    assert_error(client.get(f"{base}/{SCAN_LAYER}/units/1?y=40&x=0"), 404, "outside")
    assert_error(client.get(f"{base}/{SCAN_LAYER}/units/1?rule=magic"), 422)
    assert_error(client.get("/api/images/0123456789abcdef/layers/features.4"), 404, "no such image")
    assert_error(client.get("/api/images/not-an-id"), 422)
    assert_error(upload(client, b"GIF89a not really"), 415, "cannot decode")
    assert_error(upload(client, b""), 415, "empty")
    assert_error(client.post("/api/open", json={"name": "missing.png"}), 404)


def test_uploads_are_capped_and_bombs_refused(
    default_model, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = TestClient(
        create_app(make_explorer(default_model, photos), max_upload=2000), base_url=LOCAL
    )
    assert_error(upload(small, png_file(200, 200)), 413, "larger than")  # declared length
    assert len(png_file(30, 30)) > 2000
    assert_error(upload(small, png_file(30, 30)), 413, "larger than 2000")  # the file itself
    flat = io.BytesIO()
    Image.new("RGB", (40, 40)).save(flat, format="PNG")
    assert len(flat.getvalue()) < 2000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30 * 30)
    refused = upload(small, flat.getvalue(), "big.png")
    assert_error(refused, 415, "refusing to decode upload")
    assert "big.png" not in refused.text  # errors never repeat what the request sent
    assert "decompression bomb" in upload(small, flat.getvalue()).json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/site/../manifest.json",
        "/site/%2e%2e%2fmanifest.json",
        "/site/%2e%2e/%2e%2e/etc/passwd",
        "/site/..%2f..%2fetc%2fpasswd",
        "/site//etc/passwd",
        "/site/%2fetc%2fpasswd",
        "/site/static/..%5c..%5cindex.html",
        "/site/outside.txt",
        "/static/..%2f..%2f__init__.py",
        "/api/library/..%2fscan%2ftopk_index.json",
        "/api/library/%2e%2e%2fphotos%2fphoto_0.png",
        "/api/library/outside.png",
    ],
)
def test_file_routes_refuse_traversal_and_symlinks_out(
    client: TestClient, path: str, served_site: Path, photos: Path, tmp_path_factory
) -> None:
    secret = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret.write_text("secret")
    for link in (served_site / "outside.txt", photos / "outside.png"):
        if not link.is_symlink():
            os.symlink(secret, link)
    response = client.get(path)
    assert response.status_code == 404 and "secret" not in response.text
    assert_error(response, 404)


def test_file_inside_accepts_only_plain_names_inside(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.png").write_bytes(b"x")
    os.symlink(tmp_path / "a" / "b.png", tmp_path / "inner.png")
    assert file_inside(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    assert file_inside(tmp_path, "inner.png") is not None  # a link that stays inside is fine
    for bad in (
        "",
        "a",
        "../a/b.png",
        "a/../a/b.png",
        "/etc/passwd",
        "a//b.png",
        "a\\b.png",
        "./a/b.png",
        "a/b.png\x00",
        "~/x",
        "x" * 300,
    ):
        assert file_inside(tmp_path / "a" if bad.startswith("..") else tmp_path, bad) is None


def test_site_pages_are_served(client: TestClient) -> None:
    page = client.get(f"/site/layers/{SCAN_SHOWN}/units/7.html")
    assert page.status_code == 200 and "map 7" in page.text
    assert client.get("/").status_code == 200
    assert client.get("/static/explorer.js").headers["content-type"].startswith("text/javascript")


def test_requests_leave_the_model_untouched(client: TestClient, default_model) -> None:
    before = {k: v.clone() for k, v in default_model.state_dict().items()}
    image = upload(client, png_file(seed=5)).json()
    for rule in ("zeiler", "guided", "gradient"):
        client.get(f"/api/images/{image['id']}/layers/features.10/units/3?rule={rule}")
    after = default_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for module in default_model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    assert not default_model.training


def test_serve_warns_off_loopback_and_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert calls == [
        {"host": "0.0.0.0", "port": 8123, "log_level": "warning", "http": JsonErrorsH11Protocol}
    ]
    assert "warning: binding 0.0.0.0, not loopback" in capsys.readouterr().err
    assert main(["serve"]) == 0
    assert "warning" not in capsys.readouterr().err and calls[-1]["host"] == "127.0.0.1"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    assert main(["serve"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pip install 'deconvnet[explorer]'" in error


def test_layer_names_with_a_slash_route(tmp_path: Path, photos: Path) -> None:
    """Caffe names layers ``fire2/concat``; the routes take such names whole."""
    from torch import nn

    from deconvnet.faces.explorer.session import Explorer
    from deconvnet.inputs.preprocessing import Preprocessing

    class Fire(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add_module("fire2/conv", nn.Conv2d(3, 4, 3))
            self.add_module("fire2/relu", nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.get_submodule("fire2/relu")(self.get_submodule("fire2/conv")(x))

    model = Fire().eval()
    spec = Preprocessing(input_size=(16, 16))
    client = TestClient(
        create_app(Explorer(model, spec, name="fire", images_dir=photos)), base_url=LOCAL
    )
    image = client.post("/api/open", json={"name": "photo_0.png"}).json()
    grid = client.get(f"/api/images/{image['id']}/layers/fire2%2Fconv").json()
    assert grid["channels"] == 4 and client.get(grid["grid_url"]).status_code == 200
    unit = client.get(f"/api/images/{image['id']}/layers/fire2/conv/units/1").json()
    assert unit["layer"] == "fire2/conv" and client.get(unit["projection_url"]).status_code == 200


def test_grid_contrast_and_the_enlarged_field(client: TestClient) -> None:
    image = upload(client, png_file(48, 48, seed=11)).json()
    base = f"/api/images/{image['id']}/layers/{SCAN_LAYER}"
    layer_wide = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/grid.png").content)))
    per_map = np.asarray(
        Image.open(io.BytesIO(client.get(f"{base}/grid.png?contrast=map").content))
    )
    assert layer_wide.shape == per_map.shape and not np.array_equal(layer_wide, per_map)
    assert_error(client.get(f"{base}/grid.png?contrast=other"), 422)
    unit = client.get(f"{base}/units/4").json()
    whole = np.asarray(Image.open(io.BytesIO(client.get(unit["projection_url"]).content)))
    field = client.get(unit["projection_url"] + "&view=field").content
    top, left, bottom, right = unit["box"]
    crop = whole[top:bottom, left:right]
    enlarged = np.asarray(Image.open(io.BytesIO(field)))
    factor = 256 // max(crop.shape[:2])
    assert max(enlarged.shape[:2]) == 256
    np.testing.assert_array_equal(
        enlarged[::factor, ::factor][: crop.shape[0], : crop.shape[1]], crop
    )


def test_a_scanned_unit_carries_its_page_sections_read_back_validated(client: TestClient) -> None:
    image = client.post("/api/open", json={"name": "photo_2.png"}).json()
    unit = client.get(f"/api/images/{image['id']}/layers/{SCAN_LAYER}/units/7").json()
    keys = [section["key"] for section in unit["sections"]]
    assert keys == ["selectivity", "distribution"]  # the site's scan sections
    distribution = unit["sections"][1]
    assert distribution["available"] and distribution["picture_url"].endswith("7_distribution.png")
    assert client.get(distribution["picture_url"]).status_code == 200
    assert unit["circuit"] is None  # one scanned layer: nothing below it to link


def test_a_click_lists_the_scanned_maps_below_that_feed_the_unit_on_this_image(
    default_model, labelled_photos: Path, labelled_scan_dir: Path, labelled_site_dir: Path
) -> None:
    explorer = make_explorer(default_model, labelled_photos / "blobs")
    app = create_app(explorer, scan_dir=labelled_scan_dir, site_dir=labelled_site_dir)
    with TestClient(app, base_url=LOCAL) as client:
        image = client.post("/api/open", json={"name": "photo_1.png"}).json()
        unit = client.get(f"/api/images/{image['id']}/layers/conv2/units/7").json()
        assert [s["key"] for s in unit["sections"]] == [
            "selectivity", "distribution", "tuning", "circuits",
        ]  # fmt: skip
        circuit = unit["circuit"]
        assert circuit["upstream_layer"] == "conv1" and len(circuit["upstream"]) == 5
        x = prepare(labelled_photos / "blobs" / "photo_1.png", default_model.preprocessing,
                    torch.device("cpu")).tensor  # fmt: skip
        expected = image_circuit(
            default_model, x, "conv2", "conv1", 7, tuple(unit["position"]), rule="gradient"
        )
        assert [link["map"] for link in circuit["upstream"]] == [up.map for up in expected.upstream]
        for link, want in zip(circuit["upstream"], expected.upstream, strict=True):
            assert link["share"] == pytest.approx(want.share, rel=1e-9)
            assert link["unit_page"] == f"/site/layers/conv1/units/{want.map}.html"
            assert client.get(link["unit_page"]).status_code == 200
