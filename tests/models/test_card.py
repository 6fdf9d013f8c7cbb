"""The model card: attached once by every loader, read through ``card_of``, derived for a
model handed to the API without one; the default layer and the provenance come from it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

import deconvnet as dn
import deconvnet.models as zoo
from deconvnet import caffe
from deconvnet.errors import InputError
from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION
from deconvnet.models.card import ModelCard, Provenance, attach, card_of, default_layer
from deconvnet.models.own import load_own
from tests import _nets


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_zoo_attaches_one_card_and_mirrors_it() -> None:
    model = zoo.load("default")
    card = card_of(model)
    weights = zoo.info("default").weights[0]
    embedded = Path(zoo.__file__).parent / "weights" / weights.file_name
    assert card.provenance == Provenance("default", "default", _sha256(embedded))
    assert card.preprocessing == model.preprocessing and card.categories == model.categories
    assert dict(card.aliases) == model.layer_aliases and card.alias_of("features.10") == "conv4"
    assert zoo.info("default").layer_aliases == card.aliases
    random = card_of(zoo.load("squeezenet1_1", "random"))
    assert random.provenance == Provenance("squeezenet1_1", "random", None)
    assert random.categories is None


def test_weights_from_a_file_are_named_and_digested(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(zoo.load("default").state_dict(), path)
    card = card_of(zoo.load("default", str(path)))
    assert card.provenance == Provenance("default", str(path), _sha256(path))


def test_a_model_without_a_card_gets_one_derived_from_it() -> None:
    model = _nets.vgg_like()
    assert card_of(model) == ModelCard()  # nothing said: nothing assumed
    model.layer_aliases = {"conv2": "3"}  # type: ignore[assignment]
    model.categories = ["a", "b"]  # type: ignore[assignment]
    card = card_of(model)
    assert card.aliases == {"conv2": "3"} and card.categories == ("a", "b")
    assert card.preprocessing is None and card.provenance is None


def test_a_card_attribute_of_the_wrong_kind_is_refused_not_ignored() -> None:
    model = _nets.vgg_like()
    model.preprocessing = "not a Preprocessing"  # type: ignore[assignment]
    with pytest.raises(InputError, match=r"model\.preprocessing is a str; it must be"):
        card_of(model)


def test_an_attached_card_is_what_the_engine_reads() -> None:
    model = _nets.vgg_like()
    card = ModelCard(IMAGENET_TORCHVISION, ("cat",), {"first": "0"}, default_layer="3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert attach(model, card) is model and card_of(model) is card
    result = dn.Deconvnet(model).project(torch.randn(1, 3, 32, 32), "first", dn.TopMaps(1))
    assert (result.layer, result.layer_alias, result.categories) == ("0", "first", ("cat",))
    assert result.preprocessing == IMAGENET_TORCHVISION
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_default_layer_is_the_cards_else_the_last_convolution_after_its_rectifier() -> None:
    model = _nets.vgg_like()
    names = [n for n, _ in model.named_modules()]
    convolutions = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    rectifier = names[names.index(convolutions[-1]) + 1]
    assert isinstance(model.get_submodule(rectifier), nn.ReLU)
    assert default_layer(model) == rectifier
    assert default_layer(model, among=convolutions) == convolutions[-1]
    assert default_layer(model, among=convolutions[:2]) == convolutions[1]
    assert default_layer(nn.Sequential(nn.ReLU())) is None
    attach(model, ModelCard(default_layer="3"))
    assert default_layer(model) == "3"
    assert default_layer(model, among=["0"]) == "0"  # the card's is not among them


def test_own_models_carry_their_spec_and_weights(tmp_path: Path) -> None:
    source = tmp_path / "mynet.py"
    source.write_text(
        "import torch\n"
        "def build():\n"
        "    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n"
        "    model.categories = ('x', 'y')\n"
        "    return model\n"
    )
    spec = f"{source}:build"
    model = load_own(spec)
    assert card_of(model).provenance == Provenance(spec, "own", _sha256(source))
    assert card_of(model).categories == ("x", "y")
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    loaded = load_own(spec, weights=weights)
    assert card_of(loaded).provenance == Provenance(spec, str(weights), _sha256(weights))


def test_caffe_nets_carry_their_files(shared_data: Path) -> None:
    folder = shared_data / "caffe" / "caffenet"
    prototxt = folder / "caffenet_conv_deploy.prototxt"
    weights = folder / "caffenet_conv.caffemodel"
    net, preprocessing = caffe.load(prototxt, weights)
    card = card_of(net)
    assert card.preprocessing == preprocessing and dict(card.aliases) == net.layer_aliases
    assert card.provenance == Provenance(f"caffe:{prototxt.name}", str(weights), _sha256(weights))
    random, _ = caffe.load(prototxt)
    assert card_of(random).provenance == Provenance(f"caffe:{prototxt.name}", "random")
    with pytest.raises(AttributeError):
        net.categories  # noqa: B018 (the card holds what the model says; nothing is added)
