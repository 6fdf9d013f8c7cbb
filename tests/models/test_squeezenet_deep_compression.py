"""The embedded ``deep-compression`` SqueezeNet v1.0 weights against genuine Caffe.

Oracles, all in ``shared/data/caffe`` (see ``squeezenet/README.txt``): Caffe's forward
blobs on the butterfly, Caffe's predictions for the 200 ``imagenet-sample`` photos, the
caffemodel itself (read by deconvnet's own Caffe reader) and ``synset_words.txt``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import deconvnet.models as zoo
from deconvnet.caffe.parse import blob_array, read_caffemodel, weight_blobs
from deconvnet.errors import WeightsError
from deconvnet.inputs.images import load_image, preprocess, preprocess_batch, resized_rgb
from deconvnet.models import _api, codebook
from deconvnet.models._meta import IMAGENET_WNIDS
from deconvnet.models.squeezenet import (
    CAFFE_MODULES_1_0,
    DEEP_COMPRESSION_SHA256,
    NUM_PARAMS_1_0,
    SQUEEZENET1_0_DEEP_COMPRESSION,
    SqueezeNet,
)

MODEL, WEIGHTS = "squeezenet1_0", "deep-compression"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_squeezenet.py"
EMBEDDED_FILE = _api.EMBEDDED_DIR / SQUEEZENET1_0_DEEP_COMPRESSION.file_name
MODEL_CARD = EMBEDDED_FILE.with_suffix(".md")
WHEEL_BUDGET_BYTES = 3_000_000
"""Growth of the wheel the embedded set may cause (the files, before zip compression)."""
RELATIVE_TOLERANCE = 1e-4  # float32 im2col/sgemm (Caffe) vs torch's kernels; measured 1.4e-6
GREY_LEVEL = 1.0  # one step of the 0..255 input scale
PROB_TOLERANCE = 2e-5  # float32 vs Caffe (measured 4.9e-6); the CSV prints 6 digits
FAST_EVERY = 10  # the default suite checks every 10th photo (20); all 200 are slow
BATCH = 25
EXIF_ORIENTATION = 0x0112
UPRIGHT = (None, 0, 1)  # tag values under which exif_transpose changes nothing
README_MEAN_BGR = (104.0, 117.0, 123.0)

BLOB_MODULES = {
    "conv1": "features.1",  # Caffe's ReLUs run in place: conv blobs hold post-ReLU values
    "pool1": "features.2",
    "fire2/concat": "features.3",
    "fire3/concat": "features.4",
    "fire4/concat": "features.5",
    "pool4": "features.6",
    "fire5/concat": "features.7",
    "fire6/concat": "features.8",
    "fire7/concat": "features.9",
    "fire8/concat": "features.10",
    "pool8": "features.11",
    "fire9/concat": "features.12",
    "conv_final": "classifier.2",
    "pool_final": "classifier.3",
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return zoo.load(MODEL, weights=WEIGHTS)


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "caffe" / "squeezenet"


@pytest.fixture(scope="module")
def blobs(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "squeezenet_fwd_butterfly.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def predictions(folder: Path) -> list[dict[str, str]]:
    with (folder / "squeezenet_imagenet_sample_predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of every child of ``features`` and ``classifier``, run in order."""
    outputs = {}
    with torch.no_grad():
        for part in ("features", "classifier"):
            for index, layer in enumerate(model.get_submodule(part)):
                x = layer(x)
                outputs[f"{part}.{index}"] = x.clone()
    return outputs


def _relative_error(actual: torch.Tensor, blob: np.ndarray) -> float:
    expected = torch.from_numpy(blob).float()
    assert actual.shape == expected.shape
    return float((actual - expected).abs().max() / expected.abs().max())


def _bits(array: np.ndarray | torch.Tensor) -> np.ndarray:
    values = array.numpy() if isinstance(array, torch.Tensor) else array
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_squeezenet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loads_offline_with_caffe_preprocessing_and_padded_head(monkeypatch) -> None:
    def no_network(*args: object, **kwargs: object) -> Path:
        raise AssertionError("an embedded weight set must not download")

    monkeypatch.setattr(_api, "fetch", no_network)
    model = zoo.load(MODEL, weights=WEIGHTS)
    spec = model.preprocessing
    assert (spec.input_size, spec.resize_rule, spec.channel_order) == ((227, 227), "exact", "BGR")
    assert (spec.scale, spec.mean, spec.std) == (255.0, README_MEAN_BGR, (1.0, 1.0, 1.0))
    assert len(model.categories) == 1000 and not model.training
    assert model.classifier[1].padding == (1, 1)
    plain = zoo.load(MODEL, seed=0)  # torchvision's architecture is unchanged
    assert plain.classifier[1].padding == (0, 0)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


def test_blobs_equal_caffe_forward_pass(model, blobs) -> None:
    outputs = _outputs(model, torch.from_numpy(blobs["data"]))
    errors = {
        blob: _relative_error(outputs[name], blobs[blob]) for blob, name in BLOB_MODULES.items()
    }
    with torch.no_grad():
        prob = torch.softmax(model(torch.from_numpy(blobs["data"])), dim=1)
    errors["prob"] = _relative_error(prob.view(1, -1, 1, 1), blobs["prob"])
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= RELATIVE_TOLERANCE, (worst, errors[worst])
    assert prob.argmax().item() == int(np.argmax(blobs["prob"]))


def test_unpadded_head_does_not_reproduce_caffe(model, blobs) -> None:
    """The variant matters: torchvision's head averages 13x13 instead of Caffe's 15x15."""
    plain = SqueezeNet("1_0")
    plain.load_state_dict(model.state_dict())
    plain.eval()
    outputs = _outputs(plain, torch.from_numpy(blobs["data"]))
    assert _relative_error(outputs["features.12"], blobs["fire9/concat"]) <= RELATIVE_TOLERANCE
    assert _relative_error(outputs["classifier.3"], blobs["pool_final"]) > 100 * RELATIVE_TOLERANCE


def test_preprocessing_reproduces_caffe_input(model, shared_data: Path, blobs) -> None:
    image = load_image(shared_data / "images" / "deconvnet_butterfly.jpg")
    assert (image.shape[1], image.shape[0]) == tuple(blobs["orig_size_wh"])
    shown = resized_rgb(image, model.preprocessing).astype(np.int16)
    assert np.abs(shown - blobs["image_rgb_uint8"].astype(np.int16)).max() <= GREY_LEVEL
    x = preprocess(image, model.preprocessing)
    assert x.shape == blobs["data"].shape
    assert float((x - torch.from_numpy(blobs["data"])).abs().max()) <= GREY_LEVEL


def test_categories_follow_caffe_synset_order(model, shared_data: Path) -> None:
    lines = (shared_data / "caffe" / "synset_words.txt").read_text().split("\n")
    synsets = [line.split(" ", 1) for line in lines if line]
    assert tuple(wnid for wnid, _ in synsets) == IMAGENET_WNIDS
    assert model.categories == tuple(words for _, words in synsets)


def _probabilities(model: torch.nn.Module, images: list[np.ndarray]) -> torch.Tensor:
    """Softmax outputs for RGB images, in batches of ``BATCH``."""
    with torch.no_grad():
        return torch.cat(
            [
                torch.softmax(
                    model(preprocess_batch(images[i : i + BATCH], model.preprocessing)), 1
                )
                for i in range(0, len(images), BATCH)
            ]
        )


def _orientation(path: Path) -> int | None:
    with Image.open(path) as image:
        return image.getexif().get(EXIF_ORIENTATION)


def _check_predictions(model, sample: Path, rows: list[dict[str, str]]) -> None:
    """Top-1 as Caffe's CSV, per photo and in total.

    Decoded as the README does (``Image.open(..).convert("RGB")``, no EXIF rotation), every
    photo gets Caffe's class and probability. Through ``load_image``, which turns photos
    upright by their EXIF tag, only such turned photos may differ, and accuracy stays.
    """
    files = [sample / row["file"] for row in rows]
    probs = _probabilities(model, [np.asarray(Image.open(path).convert("RGB")) for path in files])
    ours = _probabilities(model, [load_image(path) for path in files]).argmax(1).tolist()
    caffe_top1 = [int(row["top1"]) for row in rows]
    assert probs.argmax(1).tolist() == caffe_top1
    top1_probs = probs[torch.arange(len(rows)), torch.tensor(caffe_top1)]
    expected_probs = torch.tensor([float(row["top1_prob"]) for row in rows])
    assert float((top1_probs - expected_probs).abs().max()) <= PROB_TOLERANCE
    turned = {path.name for path in files if _orientation(path) not in UPRIGHT}
    differing = {
        row["file"] for row, top1 in zip(rows, ours, strict=True) if top1 != int(row["top1"])
    }
    assert differing <= turned
    labels = [int(row["label"]) for row in rows]
    caffe_correct = sum(int(row["correct_top1"]) for row in rows)
    assert sum(p == label for p, label in zip(ours, labels, strict=True)) == caffe_correct


def test_top1_equals_caffe_on_a_photo_subset(model, shared_data: Path, predictions) -> None:
    _check_predictions(model, shared_data / "imagenet-sample", predictions[::FAST_EVERY])


@pytest.mark.slow
def test_top1_equals_caffe_on_all_200_photos(model, shared_data: Path, predictions) -> None:
    assert len(predictions) == 200
    assert sum(int(row["correct_top1"]) for row in predictions) == 128  # README: 64.0 %
    _check_predictions(model, shared_data / "imagenet-sample", predictions)


def test_decoded_weights_are_the_caffemodel_bits(model, folder: Path) -> None:
    state = model.state_dict()
    layers = weight_blobs(read_caffemodel(folder / "squeezenet_v1.0.caffemodel"))
    assert set(layers) == set(CAFFE_MODULES_1_0)
    compared = 0
    for layer, module in CAFFE_MODULES_1_0.items():
        for blob, kind in zip(layers[layer], ("weight", "bias"), strict=True):
            tensor = state[f"{module}.{kind}"]
            caffe = blob_array(blob, tuple(tensor.shape), layer)
            assert np.array_equal(_bits(tensor), _bits(caffe)), (layer, kind)
            compared += tensor.numel()
    assert compared == NUM_PARAMS_1_0 == sum(t.numel() for t in state.values())


def test_conversion_script_rewrites_the_embedded_file_bytes(folder: Path, tmp_path: Path) -> None:
    script = _script()
    caffemodel = folder / "squeezenet_v1.0.caffemodel"
    first = script.convert(caffemodel, tmp_path / "a.safetensors")
    second = script.convert(caffemodel, tmp_path / "b.safetensors")
    assert first == second == DEEP_COMPRESSION_SHA256
    assert (tmp_path / "a.safetensors").read_bytes() == EMBEDDED_FILE.read_bytes()


def test_embedded_files_fit_the_wheel_budget() -> None:
    assert EMBEDDED_FILE.stat().st_size + MODEL_CARD.stat().st_size <= WHEEL_BUDGET_BYTES
    assert hashlib.sha256(EMBEDDED_FILE.read_bytes()).hexdigest() == DEEP_COMPRESSION_SHA256


def test_model_card_carries_the_licence_and_the_digest(folder: Path) -> None:
    card = " ".join(MODEL_CARD.read_text().split())
    licence = " ".join((folder / "LICENCE.squeezenet-deep-compression").read_text().split())
    assert licence in card
    assert DEEP_COMPRESSION_SHA256 in card and f"{EMBEDDED_FILE.stat().st_size:,} bytes" in card


def test_every_weight_set_names_its_licence() -> None:
    for name in zoo.names():
        for weights in zoo.info(name).weights:
            assert weights.licence.strip(), (name, weights.name)
    assert SQUEEZENET1_0_DEEP_COMPRESSION.licence == "BSD-2-Clause"


def _embedded_copy(tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the weights folder that ``load`` reads instead of the package's."""
    copy = tmp_path / "weights"
    copy.mkdir()
    shutil.copy(EMBEDDED_FILE, copy / EMBEDDED_FILE.name)
    monkeypatch.setattr(_api, "EMBEDDED_DIR", copy)
    return copy / EMBEDDED_FILE.name


def test_tampered_embedded_file_fails_its_digest(tmp_path: Path, monkeypatch) -> None:
    path = _embedded_copy(tmp_path, monkeypatch)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one index byte: still a valid file, different weights
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        zoo.load(MODEL, weights=WEIGHTS)
    path.unlink()
    with pytest.raises(WeightsError, match="missing"):
        zoo.load(MODEL, weights=WEIGHTS)


@pytest.mark.parametrize("damage", ["truncate", "index past codebook"])
def test_corrupt_file_is_a_weights_error_even_without_digest(
    tmp_path: Path, monkeypatch, damage: str
) -> None:
    path = _embedded_copy(tmp_path, monkeypatch)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1000])
    else:
        stored = load_file(str(path))
        stored["features.0.weight.codebook"] = stored["features.0.weight.codebook"][:10]
        save_file(stored, str(path), metadata={codebook.ENCODING_KEY: codebook.ENCODING})
    unchecked = dataclasses.replace(SQUEEZENET1_0_DEEP_COMPRESSION, sha256=None)
    with pytest.raises(WeightsError, match=r"cannot read|points past"):
        zoo.load(MODEL, weights=unchecked)
