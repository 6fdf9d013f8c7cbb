"""Against what genuine BVLC Caffe computed (../shared/data/caffe, CAFFE_REFERENCE.txt).

Tolerances (CAFFE_REFERENCE.txt section 7): CaffeNet and SqueezeNet blobs <= 1e-3 absolute
or 1e-5 x max|blob|; LeNet blobs <= 1e-5 absolute. Argmax masks must be identical when the
pooling layer is fed Caffe's own bottom blob.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.caffe import IMAGENET_MEAN_BGR, load

# Caffe blob key in the npz -> the forward_blobs key (pre-ReLU values sit under the conv name).
CAFFENET_KEYS = {
    "conv1_preact": "conv1",
    "conv1": "relu1",
    "pool1": "pool1",
    "norm1": "norm1",
    "conv2_preact": "conv2",
    "conv2": "relu2",
    "pool2": "pool2",
    "norm2": "norm2",
    "conv3_preact": "conv3",
    "conv3": "relu3",
    "conv4_preact": "conv4",
    "conv4": "relu4",
    "conv5_preact": "conv5",
    "conv5": "relu5",
    "pool5": "pool5",
}
MASK_BOTTOMS = {"pool1": "conv1", "pool2": "conv2", "pool5": "conv5"}
CAFFE_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


def _blob_error(actual: torch.Tensor, expected: np.ndarray) -> tuple[float, float]:
    diff = float(np.abs(actual.detach().numpy() - expected).max())
    return diff, diff / float(np.abs(expected).max())


def _assert_caffenet_blob(actual: torch.Tensor, expected: np.ndarray, key: str) -> None:
    assert tuple(actual.shape) == expected.shape, key
    absolute, relative = _blob_error(actual, expected)
    assert absolute <= 1e-3 or relative <= 1e-5, f"{key}: abs {absolute:.3g} rel {relative:.3g}"


@pytest.mark.parametrize(
    ("prototxt", "caffemodel", "reference"),
    [
        ("caffenet_conv_deploy.prototxt", "caffenet_conv.caffemodel", "random"),
        ("caffenet_conv_deploy.prototxt", "caffenet_conv.caffemodel", "chelsea"),
        ("caffenet_conv_deploy_v1.prototxt", "caffenet_conv_v1.caffemodel", "random"),
        ("caffenet_conv_deploy_v1.prototxt", "caffenet_conv.caffemodel", "chelsea"),
        ("caffenet_conv_deploy_224.prototxt", "caffenet_conv_v1.caffemodel", "random224"),
        ("caffenet_conv_mask_deploy.prototxt", "caffenet_conv.caffemodel", "random"),
    ],
)
def test_caffenet_every_blob_and_mask(shared_data: Path, prototxt, caffemodel, reference) -> None:
    folder = shared_data / "caffe" / "caffenet"
    net, prep = load(folder / prototxt, folder / caffemodel)
    ref = np.load(folder / f"caffenet_conv_fwd_{reference}.npz")
    with torch.no_grad():
        blobs = net.forward_blobs(torch.from_numpy(ref["data"]))
        for key, ours in CAFFENET_KEYS.items():
            _assert_caffenet_blob(blobs[ours], ref[key], key)
        for pool, bottom in MASK_BOTTOMS.items():  # exact: fed Caffe's own bottom blob
            pooling = net.get_submodule(pool)
            values, indices = torch.nn.functional.max_pool2d(
                torch.from_numpy(ref[bottom]),
                pooling.kernel_size,
                pooling.stride,
                pooling.padding,
                ceil_mode=pooling.ceil_mode,
                return_indices=True,
            )
            np.testing.assert_array_equal(values.numpy(), ref[pool])
            np.testing.assert_array_equal(indices.float().numpy(), ref[f"{pool}_mask"])
        if "mask" in prototxt:  # the mask top itself, end to end
            for pool in MASK_BOTTOMS:
                ours = blobs[f"{pool}:{pool}_mask"].numpy()
                assert (ours == ref[f"{pool}_mask"]).mean() > 0.999
    assert prep.input_size == ref["data"].shape[2:]
    assert "pool5" in net.outputs  # mask tops are outputs too (never consumed), as in Caffe


def test_caffenet_photo_input_matches_caffe_preprocessing(shared_data: Path) -> None:
    ref = np.load(shared_data / "caffe" / "caffenet" / "caffenet_conv_fwd_chelsea.npz")
    image = Image.open(shared_data / "images" / "skimage_chelsea.png").convert("RGB")
    rgb = np.asarray(image.resize((227, 227), Image.BILINEAR))
    np.testing.assert_array_equal(rgb, ref["image_rgb_uint8"])
    data = (rgb[:, :, ::-1].astype(np.float32) - CAFFE_MEAN).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(data, ref["data"])


def test_mean_pixel_constant_equals_ilsvrc_mean_file(shared_data: Path) -> None:
    mean_image = np.load(shared_data / "caffe" / "ilsvrc_2012_mean.npy")
    assert mean_image.shape == (3, 256, 256)  # BGR
    np.testing.assert_allclose(mean_image.mean(axis=(1, 2)), IMAGENET_MEAN_BGR, atol=1e-7)


@pytest.mark.parametrize(
    ("prototxt", "caffemodel"),
    [
        ("lenet_deploy.prototxt", "lenet.caffemodel"),
        ("lenet_deploy_v1.prototxt", "lenet_v1.caffemodel"),
        ("lenet_deploy.prototxt", "lenet_v1.caffemodel"),
    ],
)
def test_lenet_every_blob(shared_data: Path, prototxt: str, caffemodel: str) -> None:
    folder = shared_data / "caffe" / "lenet"
    net, prep = load(folder / prototxt, folder / caffemodel)
    ref = np.load(folder / "lenet_fwd.npz")
    params = np.load(folder / "lenet_params.npz")
    for layer in ("conv1", "conv2", "ip1", "ip2"):
        module = net.get_submodule(layer)
        np.testing.assert_array_equal(module.weight.detach().numpy(), params[f"{layer}_w"])
        np.testing.assert_array_equal(module.bias.detach().numpy(), params[f"{layer}_b"])
    with torch.no_grad():
        blobs = net.forward_blobs(torch.from_numpy(ref["data"]))
        out = net(torch.from_numpy(ref["data"]))
    keys = {
        "conv1": "conv1",
        "pool1": "pool1",
        "conv2": "conv2",
        "pool2": "pool2",
        "ip1_preact": "ip1",
        "ip1": "relu1",
        "ip2": "ip2",
        "prob": "prob",
    }
    for key, ours in keys.items():
        np.testing.assert_allclose(blobs[ours].numpy(), ref[key], rtol=0, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(out.numpy(), ref["prob"], rtol=0, atol=1e-5)
    assert prep.scale == 255 / 256 and prep.input_size == (28, 28)


def _squeezenet_input(path: Path) -> torch.Tensor:
    """The README's preprocessing: whole image to 227x227 bilinear, BGR, minus 104/117/123."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((227, 227), Image.BILINEAR))
    return torch.from_numpy(
        (rgb[:, :, ::-1].astype(np.float32) - CAFFE_MEAN).transpose(2, 0, 1).copy()
    )


def test_squeezenet_every_blob(shared_data: Path) -> None:
    folder = shared_data / "caffe" / "squeezenet"
    net, _ = load(
        folder / "squeezenet_v1.0_deploy_prob_mask.prototxt", folder / "squeezenet_v1.0.caffemodel"
    )
    ref = np.load(folder / "squeezenet_fwd_butterfly.npz")
    np.testing.assert_array_equal(
        _squeezenet_input(shared_data / "images" / "deconvnet_butterfly.jpg").numpy()[None],
        ref["data"],
    )
    with torch.no_grad():
        blobs = net.forward_blobs(torch.from_numpy(ref["data"]))
    # in-place ReLUs: Caffe's conv blobs are post-ReLU, i.e. the output of the last layer
    # writing that top; map each top to that layer.
    last_writer = {top: step.layer for step in net.steps for top in step.tops[:1]}
    checked = 0
    for key in ref.files:
        if key in ("data", "image_rgb_uint8", "orig_size_wh") or key.endswith("_mask"):
            continue
        _assert_caffenet_blob(blobs[last_writer[key]], ref[key], key)
        checked += 1
    assert checked >= 30
    top5 = torch.topk(blobs["prob"].flatten(), 5).indices.tolist()
    assert top5 == [323, 641, 326, 584, 701]
    for pool in ("pool1", "pool4", "pool8"):  # masks where the maximum is unique
        bottom = net.steps[[s.layer for s in net.steps].index(pool)].bottoms[0]
        mask = blobs[f"{pool}:{pool}_mask"].numpy()
        assert mask.shape == ref[f"{pool}_mask"].shape
        assert (mask == ref[f"{pool}_mask"]).mean() > 0.99, bottom


def _squeezenet_predictions(shared_data: Path, limit: int | None) -> tuple[int, int, int]:
    folder = shared_data / "caffe" / "squeezenet"
    net, _ = load(folder / "squeezenet_v1.0_deploy.prototxt", folder / "squeezenet_v1.0.caffemodel")
    with open(folder / "squeezenet_imagenet_sample_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    same = top1 = 0
    for start in range(0, len(rows), 25):
        chunk = rows[start : start + 25]
        batch = torch.stack(
            [_squeezenet_input(shared_data / "imagenet-sample" / r["file"]) for r in chunk]
        )
        with torch.no_grad():
            scores = net(batch).flatten(1)
        for row, row_scores in zip(chunk, scores, strict=True):
            top5 = torch.topk(row_scores, 5).indices.tolist()
            same += top5 == [int(v) for v in row["top5"].split()]
            top1 += top5[0] == int(row["label"])
    return same, top1, len(rows)


def test_squeezenet_predictions_equal_caffe_subset(shared_data: Path) -> None:
    same, _, count = _squeezenet_predictions(shared_data, 25)
    assert same == count


@pytest.mark.slow
def test_squeezenet_predictions_equal_caffe_all_200(shared_data: Path) -> None:
    same, top1, count = _squeezenet_predictions(shared_data, None)
    assert count == 200 and same == count
    assert top1 == 128  # Caffe's own top-1 on these photos (README)


def test_seed_forward_butterfly_blobs(shared_data: Path) -> None:
    """seed/forward_butterfly.npz: the demo's convnet side, CaffeNet conv weights."""
    folder = shared_data / "caffe" / "caffenet"
    net, _ = load(
        folder / "caffenet_conv_mask_deploy.prototxt", folder / "caffenet_conv.caffemodel"
    )
    ref = np.load(shared_data / "caffe" / "seed" / "forward_butterfly.npz")
    np.testing.assert_allclose(ref["mean_pixel_bgr"], IMAGENET_MEAN_BGR, atol=1e-8)
    with torch.no_grad():
        blobs = net.forward_blobs(torch.from_numpy(ref["data"]))
    for key, ours in CAFFENET_KEYS.items():
        _assert_caffenet_blob(blobs[ours], ref[key], key)
    for pool, bottom in MASK_BOTTOMS.items():
        pooling = net.get_submodule(pool)
        _, indices = torch.nn.functional.max_pool2d(
            torch.from_numpy(ref[bottom]),
            pooling.kernel_size,
            pooling.stride,
            ceil_mode=True,
            return_indices=True,
        )
        np.testing.assert_array_equal(indices.float().numpy(), ref[f"{pool}_mask"])


def test_seed_inverse_nets_name_the_custom_layer(shared_data: Path) -> None:
    from deconvnet.errors import CaffeFormatError

    seed = shared_data / "caffe" / "seed"
    for prototxt in ("seed_invdeploy_batch1.prototxt", "paper_inv_from_pool5.prototxt"):
        with pytest.raises(CaffeFormatError, match="InvPooling"):
            load(seed / prototxt)
