"""One name per layer, short errors with "did you mean", class labels by name, prefix or
WordNet id, and the default layer (issue 23, items 1, 6 and 7).

Oracles: the models' own alias tables, ImageNet's category list and WordNet ids as
Caffe's ``synset_words.txt`` orders them (index 281 is n02123045 "tabby, tabby cat")."""

from __future__ import annotations

import pytest
from torch import nn

import deconvnet as dn
from deconvnet import models
from deconvnet.errors import InputError, LayerNotFoundError
from deconvnet.models import naming
from deconvnet.models._meta import IMAGENET_CATEGORIES, IMAGENET_WNIDS


@pytest.fixture(scope="module")
def squeezenet() -> nn.Module:
    return models.load("squeezenet1_0", "deep-compression")


def test_an_unknown_layer_gets_a_short_did_you_mean_and_the_count(squeezenet) -> None:
    with pytest.raises(LayerNotFoundError) as raised:
        dn.resolve_layer(squeezenet, "fire55")
    message = str(raised.value).strip("'\"")
    names = naming.layer_names(squeezenet)
    assert "did you mean fire5" in message and f"({len(names)} layer names" in message
    assert len(message) < 200 and "features.3.squeeze_activation" not in message


def test_ambiguous_and_unknown_class_names_say_what_would_do() -> None:
    with pytest.raises(InputError, match=r"matches 2 classes \(134 crane, 517 crane\)"):
        naming.class_index("crane", IMAGENET_CATEGORIES, 1000)
    with pytest.raises(InputError, match=r"did you mean tabby cat\? \(1000 classes\)"):
        naming.class_index("kitty cat", IMAGENET_CATEGORIES, 1000)
    with pytest.raises(InputError, match="out of range"):
        naming.class_index("1000", IMAGENET_CATEGORIES, 1000)
    with pytest.raises(InputError, match="no class names"):
        naming.class_index("cat", None, 10)
    assert naming.class_index("cat", models.load("default").categories, 10) == 3


def test_a_wnid_is_found_in_imagenet_file_names() -> None:
    assert naming.wnid_in("n02085936_Maltese_dog.JPEG") == "n02085936"
    assert naming.wnid_in("val/n01440764/ILSVRC2012_val_00000293.JPEG") == "n01440764"
    assert naming.wnid_in("chelsea.png") is None and naming.wnid_in("xn012345678") is None
    assert naming.wnids_for(IMAGENET_CATEGORIES) == IMAGENET_WNIDS
    assert naming.wnids_for(("a", "b")) is None


def test_the_default_layer_is_the_last_convolution_after_its_relu(squeezenet) -> None:
    default = models.load("default")
    assert naming.default_layer(default) == "features.11"  # relu4, not conv4
    assert naming.display_name(default.layer_aliases, "features.11") == "relu4"
    assert naming.default_layer(squeezenet) == "classifier.2"  # relu10
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2))
    assert naming.default_layer(no_relu) == "0"
    with pytest.raises(InputError, match="no Conv2d"):
        naming.default_layer(nn.Sequential(nn.Linear(3, 4)))


def test_display_names_and_blocks(squeezenet) -> None:
    aliases = squeezenet.layer_aliases
    assert naming.display_name(aliases, "features.7") == "fire5"
    assert naming.display_name(aliases, "features.7.squeeze") == "features.7.squeeze"
    assert naming.display_name({}, "layer1.0.relu#2") == "layer1.0.relu#2"
    assert naming.block_of(squeezenet, "features.7") == "fire5"
    assert naming.block_of(squeezenet, "features.7.expand3x3") == "fire5"
    assert naming.block_of(squeezenet, "features.6") is None  # pool4 stands alone
    assert naming.class_layer(squeezenet, "classifier.1", 1000)
    assert not naming.class_layer(squeezenet, "features.12", 512)


def test_class_layers_follow_the_given_class_names() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ReLU())
    names = ("a", "b", "c", "d")
    assert naming.class_layer(net, "3", 4, names) and naming.class_layer(net, "2", 4, names)
    assert not naming.class_layer(net, "1", 8, names)  # a convolution follows it
    assert not naming.class_layer(net, "3", 4)  # no class names at all
