"""``timm:NAME`` and ``torchvision:NAME`` with the real libraries (``pytest -m zoo``, in
CI's second virtualenv: torch 2.14.1, torchvision 0.29.1, timm).

Oracles: the library itself — the module it builds, its own eval transform applied to the
same photo (timm's ``create_transform``, torchvision's ``weights.transforms()``), its class
names — and ``torch.autograd.grad`` for the gradient rule. Downloads go to a loopback HTTP
server standing in for the Hugging Face Hub and download.pytorch.org.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import deconvnet as dn
import deconvnet.models as zoo
from deconvnet.errors import WeightsError
from deconvnet.inputs.images import bundled_photo, load_image, preprocess
from deconvnet.models.card import card_of, default_layer

pytestmark = pytest.mark.zoo

TIMM_MODELS = ["resnet50d", "efficientnet_b0", "mobilenetv3_small_100", "dm_nfnet_f0"]
TORCHVISION_MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1"]
SMALL_TIMM = "test_resnet"  # 0.47 M parameters, published as timm/test_resnet.r160_in1k
SMALL_TORCHVISION = "squeezenet1_1"  # 1.2 M parameters


@pytest.fixture(scope="module")
def timm() -> ModuleType:
    return pytest.importorskip("timm")


@pytest.fixture(scope="module")
def torchvision() -> ModuleType:
    return pytest.importorskip("torchvision")


def _photo() -> Image.Image:
    return Image.open(bundled_photo()).convert("RGB")


def _last_conv(model: nn.Module) -> str:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]


def _same_parameters(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_models_by_name_with_timms_own_preprocessing(timm: ModuleType, name: str) -> None:
    model = zoo.load(f"timm:{name}", seed=0)
    reference = timm.create_model(name)
    assert type(model) is type(reference) and not model.training
    assert [n for n, _ in model.named_modules()] == [n for n, _ in reference.named_modules()]
    card = card_of(model)
    assert card.provenance == dn.models.card.Provenance(f"timm:{name}", "random", None)
    assert card.categories is None  # random weights have no classes
    assert default_layer(model) == _last_conv(reference)
    config = timm.data.resolve_model_data_config(reference)
    assert card.preprocessing is not None
    assert card.preprocessing.interpolation == config["interpolation"]
    assert card.preprocessing.input_size == tuple(config["input_size"][1:])
    expected = timm.data.create_transform(**config)(_photo())[None]
    ours = preprocess(load_image(bundled_photo()), card.preprocessing)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_models_by_name_with_their_weights_transforms(
    torchvision: ModuleType, name: str
) -> None:
    model = zoo.load(f"torchvision:{name}", seed=0)
    reference = torchvision.models.get_model(name)
    assert type(model) is type(reference) and not model.training
    card = card_of(model)
    assert card.preprocessing is not None and default_layer(model) == _last_conv(reference)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    expected = weights.transforms()(_photo())[None]
    ours = preprocess(load_image(bundled_photo()), card.preprocessing)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_seeded_random_init_is_reproducible_and_leaves_the_global_rng(timm: ModuleType) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = zoo.load(f"timm:{SMALL_TIMM}", seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    second = zoo.load(f"timm:{SMALL_TIMM}", seed=7).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize(
    ("spec", "layer"),
    [("timm:efficientnet_b0", "blocks.3.0.conv_pw"), ("torchvision:resnet18", "layer3.0.conv2")],
)
def test_the_gradient_rule_is_autograds_gradient(spec: str, layer: str) -> None:
    """On SiLU, squeeze-excitation and residual nets alike: the projection is the
    activation times its gradient (float64, ≤ 1e-10 of the largest value)."""
    model = zoo.load(spec, seed=0).double()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    result = dn.Deconvnet(model, "gradient").project(x, layer, dn.MapMax(5))
    module = dict(model.named_modules())[layer]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o))
    leaf = x.clone().requires_grad_(True)
    try:
        model(leaf)
    finally:
        handle.remove()
    output = captured[0][0, 5]
    y, x_ = divmod(int(output.argmax()), output.shape[1])
    (gradient,) = torch.autograd.grad(output[y, x_], leaf)
    assert result.positions[0, 0].tolist() == [y, x_]
    value = output[y, x_].detach()  # the seed is the activation itself, as every rule's
    torch.testing.assert_close(result.values[0, 0], value, rtol=0, atol=1e-12)
    expected = value * gradient[0]
    error = (result.images[0, 0] - expected).abs().max() / expected.abs().max()
    assert float(error) <= 1e-10


def test_a_relu_net_projects_under_the_deconvnet_rule(torchvision: ModuleType) -> None:
    model = zoo.load("torchvision:resnet18", seed=0)
    x = preprocess(load_image(bundled_photo()), card_of(model).preprocessing)
    result = dn.Deconvnet(model, "zeiler").project(x, "layer2.1.conv2", dn.TopMaps(3))
    maps = dn.Deconvnet(model).layer_output(x, "layer2.1.conv2")
    strongest = maps[0].flatten(1).max(dim=1).values.topk(3).values
    torch.testing.assert_close(result.values[0], strongest)
    assert bool((result.images.abs().sum(dim=(2, 3, 4)) > 0).all())


def test_a_weights_file_is_checked_and_loaded(timm: ModuleType, tmp_path: Path) -> None:
    state = zoo.load(f"timm:{SMALL_TIMM}", seed=3).state_dict()
    good = tmp_path / "weights.pth"
    torch.save(state, good)
    model = zoo.load(f"timm:{SMALL_TIMM}", good)
    assert _same_parameters(model, state)
    card = card_of(model)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert card.provenance == dn.models.card.Provenance(f"timm:{SMALL_TIMM}", str(good), digest)
    assert card.categories is not None and card.categories[0] == "tench, Tinca tinca"
    wrong = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(zoo.load("timm:resnet18", seed=0).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"does not fit ResNet: missing keys .*unexpected"):
        zoo.load(f"timm:{SMALL_TIMM}", wrong)
    pickled = tmp_path / "pickled.pth"
    torch.save({**state, "extra": Image.new("RGB", (1, 1))}, pickled)  # needs full pickle
    with pytest.raises(WeightsError, match="weights_only"):
        zoo.load(f"timm:{SMALL_TIMM}", pickled)


def _serve(root: Path, relative: str, payload: bytes) -> None:
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)


def _state_bytes(state: dict[str, torch.Tensor], tmp_path: Path, kind: str) -> bytes:
    path = tmp_path / f"served.{kind}"
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    return path.read_bytes()


def test_timm_pretrained_comes_from_the_hub_address_once(
    timm: ModuleType,
    server: tuple[str, Path],
    hub_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, root = server
    monkeypatch.setenv("HF_ENDPOINT", base)  # a Hub mirror, as huggingface_hub honours it
    state = zoo.load(f"timm:{SMALL_TIMM}", seed=5).state_dict()
    payload = _state_bytes(state, tmp_path, "safetensors")
    hub_id = timm.models.get_pretrained_cfg(SMALL_TIMM).hf_hub_id
    _serve(root, f"{hub_id}/resolve/main/model.safetensors", payload)
    calls: list[tuple[int, int | None]] = []
    model = zoo.load(f"timm:{SMALL_TIMM}", "pretrained", progress=lambda d, t: calls.append((d, t)))
    assert _same_parameters(model, state)
    cached = hub_dir / f"{hub_id.replace('/', '--')}--model.safetensors"
    assert cached.read_bytes() == payload
    assert calls[-1] == (len(payload), len(payload))
    card = card_of(model)
    assert card.provenance is not None and card.provenance.weights == "pretrained"
    assert card.provenance.weights_sha256 == hashlib.sha256(payload).hexdigest()
    assert card.categories is not None and len(card.categories) == 1000
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    again = zoo.load(f"timm:{SMALL_TIMM}", "pretrained")  # offline now: the cached file
    assert _same_parameters(again, state)


def test_torchvision_pretrained_comes_from_its_url_with_the_digest_checked(
    torchvision: ModuleType,
    server: tuple[str, Path],
    hub_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, root = server
    state = zoo.load(f"torchvision:{SMALL_TORCHVISION}", seed=6).state_dict()
    payload = _state_bytes(state, tmp_path, "pth")
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    _serve(root, f"models/{SMALL_TORCHVISION}-{prefix}.pth", payload)
    weights = torchvision.models.get_model_weights(SMALL_TORCHVISION).DEFAULT
    monkeypatch.setattr(weights.value, "url", f"{base}/models/{SMALL_TORCHVISION}-{prefix}.pth")
    model = zoo.load(f"torchvision:{SMALL_TORCHVISION}", "pretrained")
    assert _same_parameters(model, state)
    assert (hub_dir / f"{SMALL_TORCHVISION}-{prefix}.pth").read_bytes() == payload
    assert card_of(model).categories == tuple(weights.meta["categories"])
    named = zoo.load(f"torchvision:{SMALL_TORCHVISION}", "IMAGENET1K_V1")  # its own name
    assert _same_parameters(named, state)
    # a file that is not the one the name's digest promises is refused, nothing kept
    _serve(root, f"models/{SMALL_TORCHVISION}-00000000.pth", payload)
    monkeypatch.setattr(weights.value, "url", f"{base}/models/{SMALL_TORCHVISION}-00000000.pth")
    with pytest.raises(WeightsError, match="wrong sha256"):
        zoo.load(f"torchvision:{SMALL_TORCHVISION}", "pretrained")
    assert not (hub_dir / f"{SMALL_TORCHVISION}-00000000.pth").exists()
    with pytest.raises(WeightsError, match=r"no weight set 'imagenet' \(named sets: pretrained"):
        zoo.load(f"torchvision:{SMALL_TORCHVISION}", "imagenet")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_offline_pretrained_is_one_line_naming_the_url_and_the_file(
    library: str,
    hub_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deconvnet.faces.cli import main

    module: Any = pytest.importorskip(library)
    port = _closed_port()  # nothing listens: the machine is offline for this address
    if library == "timm":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        hub_id = module.models.get_pretrained_cfg(SMALL_TIMM).hf_hub_id
        url = f"http://127.0.0.1:{port}/{hub_id}/resolve/main/model.safetensors"
        target = hub_dir / f"{hub_id.replace('/', '--')}--model.safetensors"
        spec = f"timm:{SMALL_TIMM}"
    else:
        weights = module.models.get_model_weights(SMALL_TORCHVISION).DEFAULT
        file_name = weights.url.rsplit("/", 1)[-1]
        url = f"http://127.0.0.1:{port}/models/{file_name}"
        monkeypatch.setattr(weights.value, "url", url)
        target = hub_dir / file_name
        spec = f"torchvision:{SMALL_TORCHVISION}"
    assert main(["layers", "--model", spec, "--weights", "pretrained"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"could not download {url}" in err and f"save it as {target}" in err
    assert not target.exists()


def test_an_export_of_a_library_model_has_the_eager_models_fields(
    torchvision: ModuleType, tmp_path: Path
) -> None:
    """A real CNN through torch.export: layer classes, default layer and every receptive
    field equal to the eager module's."""
    from deconvnet.engine.receptive import layer_table
    from deconvnet.models.own import load_own

    eager = zoo.load("torchvision:resnet18", seed=0)
    shape = (1, 3, 96, 128)
    program = torch.export.export(eager, (torch.randn(*shape),))
    torch.export.save(program, tmp_path / "resnet18.pt2")
    exported = load_own(str(tmp_path / "resnet18.pt2"))
    assert card_of(exported).input_shape == shape
    assert default_layer(exported) == default_layer(eager) == "layer4.1.conv2"
    expected = [(r.name, r.type, r.output_shape, r.rf) for r in layer_table(eager, shape)]
    found = [(r.name, r.type, r.output_shape, r.rf) for r in layer_table(exported, shape)]
    assert found == expected

