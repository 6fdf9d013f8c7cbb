"""Registry and local-file loading: names, info, seeded init, .pth files, mismatch errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import deconvnet.models as zoo
from deconvnet.errors import DeconvnetError, WeightsError
from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION
from deconvnet.models.caffenet import CAFFE_PREPROCESSING, PARAM_LAYERS

SMALL = "squeezenet1_1"  # the cheapest ImageNet model to build (1.2 M parameters)


@dataclass
class NotATensor:
    """A picklable object that weights_only loading must refuse."""

    value: int = 1


def _tensors_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unknown_model_is_a_value_error_listing_names() -> None:
    with pytest.raises(zoo.ModelNotFoundError, match="known models: alexnet, caffenet") as err:
        zoo.load("resnet9000")
    assert isinstance(err.value, ValueError) and isinstance(err.value, DeconvnetError)
    with pytest.raises(zoo.ModelNotFoundError):
        zoo.info("resnet9000")


def test_info_describes_without_building() -> None:
    spec = zoo.info("vgg16")
    assert spec.name == "vgg16" and spec.num_classes == 1000
    assert spec.weights[0].name == "imagenet" and spec.weights[0].url.startswith("https://")
    assert spec.weights[0].file_name == "vgg16-397923af.pth"
    assert spec.preprocessing == IMAGENET_TORCHVISION
    assert spec.layer_aliases["conv5_3"] == "features.28"
    assert zoo.info("caffenet").preprocessing == CAFFE_PREPROCESSING
    assert CAFFE_PREPROCESSING.channel_order == "BGR" and CAFFE_PREPROCESSING.scale == 255.0


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(
            "alexnet", num_classes=1, preprocessing=IMAGENET_TORCHVISION, layer_aliases={}
        )(lambda **kwargs: torch.nn.Identity())


def test_random_init_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a = zoo.load(SMALL, seed=3)
    b = zoo.load(SMALL, seed=3)
    c = zoo.load(SMALL, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert _tensors_equal(a, b) and not _tensors_equal(a, c)


def test_random_init_attributes_and_eval_mode() -> None:
    model = zoo.load(SMALL, seed=0, device="cpu")
    assert model.categories is None
    assert model.preprocessing == IMAGENET_TORCHVISION
    assert model.layer_aliases["fire9"] == "features.12"
    assert not model.training


def test_random_overrides_a_default_weight_set() -> None:
    random_model = zoo.load("default", weights="random", seed=0)
    assert random_model.categories is None
    embedded = zoo.load("default")
    assert not torch.equal(random_model.features[0].weight, embedded.features[0].weight)


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_load_from_state_dict_file(tmp_path: Path, suffix: str) -> None:
    source = zoo.load(SMALL, seed=1)
    path = tmp_path / f"weights{suffix}"
    torch.save(source.state_dict(), path)
    loaded = zoo.load(SMALL, weights=path, seed=2)
    assert _tensors_equal(source, loaded)
    assert loaded.categories is not None and len(loaded.categories) == 1000
    assert zoo.load(SMALL, weights=str(path)).categories == loaded.categories


def test_load_unwraps_a_checkpoint_dict(tmp_path: Path) -> None:
    source = zoo.load(SMALL, seed=1)
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": source.state_dict(), "epoch": torch.tensor(3)}, path)
    assert _tensors_equal(source, zoo.load(SMALL, weights=path))


def test_pickled_objects_are_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": NotATensor()}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        zoo.load(SMALL, weights=path)


def test_non_state_dict_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        zoo.load(SMALL, weights=path)


def test_mismatched_state_dict_lists_keys_and_shapes(tmp_path: Path) -> None:
    state = zoo.load(SMALL, seed=0).state_dict()
    del state["features.0.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["classifier.1.weight"] = torch.zeros(10, 512, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        zoo.load(SMALL, weights=path)
    message = str(err.value)
    assert "\n" not in message
    assert "missing keys [features.0.bias]" in message
    assert "unexpected keys [extra.weight]" in message
    assert "classifier.1.weight (10, 512, 1, 1) vs model (1000, 512, 1, 1)" in message


def test_many_missing_keys_are_abbreviated(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({}, path)
    with pytest.raises(WeightsError, match=r"\.\.\. \(\+\d+ more\)"):
        zoo.load(SMALL, weights=path)


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        zoo.load(SMALL, weights=tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match=r"no weight set 'cifar' \(named sets: imagenet\)"):
        zoo.load(SMALL, weights="cifar")
    with pytest.raises(WeightsError, match="named sets: none"):
        zoo.load("zfnet", weights="imagenet")
    with pytest.raises(WeightsError, match="got int"):
        zoo.load(SMALL, weights=3)  # type: ignore[arg-type]


def test_state_dict_from_caffe_reshapes_v1_blobs() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = zoo.load("caffenet", seed=0).state_dict()
    blobs = {}
    for layer in PARAM_LAYERS:
        index = zoo.info("caffenet").layer_aliases[layer]
        weight, bias = reference[f"{index}.weight"], reference[f"{index}.bias"]
        if layer.startswith("fc"):  # V1 caffemodels store 4-D blobs
            weight = weight.reshape(1, 1, *weight.shape)
        blobs[layer] = [weight, bias.reshape(1, 1, 1, -1)]
    state = zoo.state_dict_from_caffe(blobs)
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in state)
    blobs["conv3"] = [torch.randn(3, generator=generator), torch.zeros(384)]
    with pytest.raises(WeightsError, match=r"conv3\.weight has shape"):
        zoo.state_dict_from_caffe(blobs)
    del blobs["conv3"]
    with pytest.raises(WeightsError, match="'conv3' needs"):
        zoo.state_dict_from_caffe(blobs)
