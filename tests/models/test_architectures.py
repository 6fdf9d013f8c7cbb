"""Each architecture: builds, has torchvision's state-dict keys, known parameter counts,
and the feature-map sizes stated by its paper or prototxt."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deconvnet.models as zoo
from deconvnet.models.squeezenet import Fire

# Parameter counts published by torchvision (weights meta "num_params") and, for
# CaffeNet, the sum of the BVLC deploy.prototxt parameter shapes (see CAFFE_REFERENCE.txt).
KNOWN_PARAM_COUNTS = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "caffenet": 60_965_224,
}

# torchvision/models/alexnet.py: conv/linear indices inside features/classifier.
ALEXNET_KEYS = [
    "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
    "features.6.weight", "features.6.bias", "features.8.weight", "features.8.bias",
    "features.10.weight", "features.10.bias",
    "classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
    "classifier.6.weight", "classifier.6.bias",
]  # fmt: skip
ALEXNET_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
    "features.6.weight": (384, 192, 3, 3), "features.8.weight": (256, 384, 3, 3),
    "features.10.weight": (256, 256, 3, 3), "classifier.1.weight": (4096, 9216),
    "classifier.4.weight": (4096, 4096), "classifier.6.weight": (1000, 4096),
}  # fmt: skip

# torchvision/models/vgg.py, cfg "D" through make_layers (conv at these indices).
VGG16_KEYS = [
    f"features.{i}.{kind}"
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    for kind in ("weight", "bias")
] + [f"classifier.{i}.{kind}" for i in (0, 3, 6) for kind in ("weight", "bias")]


def _squeezenet_keys(fire_indices: tuple[int, ...]) -> list[str]:
    keys = ["features.0.weight", "features.0.bias"]
    for i in fire_indices:
        for conv in ("squeeze", "expand1x1", "expand3x3"):
            keys += [f"features.{i}.{conv}.weight", f"features.{i}.{conv}.bias"]
    return [*keys, "classifier.1.weight", "classifier.1.bias"]


# torchvision/models/squeezenet.py: Fire modules at these features indices.
SQUEEZENET1_0_KEYS = _squeezenet_keys((3, 4, 5, 7, 8, 9, 10, 12))
SQUEEZENET1_1_KEYS = _squeezenet_keys((3, 4, 6, 7, 9, 10, 11, 12))

TORCHVISION_KEYS = {
    "alexnet": ALEXNET_KEYS,
    "vgg16": VGG16_KEYS,
    "squeezenet1_0": SQUEEZENET1_0_KEYS,
    "squeezenet1_1": SQUEEZENET1_1_KEYS,
}


def _meta_model(name: str) -> nn.Module:
    """Build without allocating weights: keys, shapes and counts need no memory."""
    spec = zoo.info(name)
    with torch.device("meta"):
        return spec.builder(num_classes=spec.num_classes)


def _feature_sizes(model: nn.Module, size: int) -> list[tuple[int, ...]]:
    x = torch.zeros(1, 3, size, size)
    shapes = []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_names_cover_the_zoo() -> None:
    assert zoo.names() == [
        "alexnet",
        "caffenet",
        "default",
        "squeezenet1_0",
        "squeezenet1_1",
        "vgg16",
        "zfnet",
    ]


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_state_dict_keys_equal_torchvision(name: str) -> None:
    assert list(_meta_model(name).state_dict()) == TORCHVISION_KEYS[name]


def test_alexnet_shapes_equal_torchvision() -> None:
    state = _meta_model("alexnet").state_dict()
    assert {key: tuple(state[key].shape) for key in ALEXNET_SHAPES} == ALEXNET_SHAPES


@pytest.mark.parametrize("name", sorted(KNOWN_PARAM_COUNTS))
def test_parameter_counts(name: str) -> None:
    count = sum(p.numel() for p in _meta_model(name).parameters())
    assert count == KNOWN_PARAM_COUNTS[name]
    weights = zoo.info(name).weights
    assert all(w.num_params == count for w in weights)


def test_zfnet_parameter_count_from_layer_shapes() -> None:
    # conv1 96x3x7x7, conv2 256x96x5x5, conv3 384x256x3x3, conv4 384x384x3x3,
    # conv5 256x384x3x3, fc6 4096x9216, fc7 4096x4096, fc8 1000x4096, plus biases.
    expected = (
        96 * 3 * 49 + 96 + 256 * 96 * 25 + 256 + 384 * 256 * 9 + 384 + 384 * 384 * 9 + 384
        + 256 * 384 * 9 + 256 + 4096 * 9216 + 4096 + 4096 * 4096 + 4096 + 1000 * 4096 + 1000
    )  # fmt: skip
    assert sum(p.numel() for p in _meta_model("zfnet").parameters()) == expected


def test_caffenet_blob_shapes_match_bvlc_prototxt() -> None:
    # Blob shapes Caffe reports for deploy.prototxt (CAFFE_REFERENCE.txt, section 2).
    model = zoo.load("caffenet", seed=0)
    sizes = _feature_sizes(model, 227)
    aliases = model.layer_aliases
    by_name = {name: sizes[int(aliases[name].split(".")[1])] for name in (
        "conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5"
    )}  # fmt: skip
    assert by_name == {
        "conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1": (96, 27, 27),
        "conv2": (256, 27, 27), "pool2": (256, 13, 13), "norm2": (256, 13, 13),
        "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13),
        "pool5": (256, 6, 6),
    }  # fmt: skip
    assert model(torch.zeros(1, 3, 227, 227)).shape == (1, 1000)


def test_caffenet_grouped_conv_shapes_match_bvlc() -> None:
    state = _meta_model("caffenet").state_dict()
    assert tuple(state["features.4.weight"].shape) == (256, 48, 5, 5)
    assert tuple(state["features.10.weight"].shape) == (384, 192, 3, 3)
    assert tuple(state["features.12.weight"].shape) == (256, 192, 3, 3)


def test_zfnet_sizes_match_paper_figure_3() -> None:
    model = zoo.load("zfnet", seed=0)
    sizes = _feature_sizes(model, 224)
    aliases = model.layer_aliases
    spatial = {name: sizes[int(aliases[name].split(".")[1])][1:] for name in (
        "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"
    )}  # fmt: skip
    assert spatial == {
        "conv1": (110, 110), "pool1": (55, 55), "conv2": (26, 26), "pool2": (13, 13),
        "conv3": (13, 13), "conv4": (13, 13), "conv5": (13, 13), "pool5": (6, 6),
    }  # fmt: skip
    assert sizes[-1][0] == 256
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize(
    ("name", "size", "pool5"),
    [("alexnet", 224, (256, 6, 6)), ("squeezenet1_0", 224, (512, 13, 13)),
     ("squeezenet1_1", 224, (512, 13, 13))],
)  # fmt: skip
def test_torchvision_models_run(name: str, size: int, pool5: tuple[int, int, int]) -> None:
    model = zoo.load(name, seed=0)
    assert _feature_sizes(model, size)[-1] == pool5
    assert model(torch.zeros(1, 3, size, size)).shape == (1, 1000)


def test_vgg16_feature_sizes_at_small_input() -> None:
    # Five 2x2/2 pools: 64 -> 2; checked on the meta device to avoid 500 MB of weights.
    model = _meta_model("vgg16")
    x = torch.zeros(1, 3, 64, 64, device="meta")
    assert tuple(model.features(x).shape) == (1, 512, 2, 2)
    assert tuple(model(x).shape) == (1, 1000)


ALIAS_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv2d,), "fc": (nn.Linear,), "relu": (nn.ReLU,), "norm": (nn.LocalResponseNorm,),
    "drop": (nn.Dropout,), "pool": (nn.MaxPool2d, nn.AdaptiveAvgPool2d),
    "fire": (Fire,),
}  # fmt: skip


@pytest.mark.parametrize("name", zoo.names())
def test_layer_aliases_name_modules_of_their_kind(name: str) -> None:
    modules = dict(_meta_model(name).named_modules())
    aliases = zoo.info(name).layer_aliases
    assert any(alias.startswith("conv1") for alias in aliases)
    for alias, target in aliases.items():
        prefix = alias.rstrip("0123456789_")
        assert isinstance(modules[target], ALIAS_KINDS[prefix]), (alias, target)
