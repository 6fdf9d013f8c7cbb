"""The old caffe-deconvnet demo and the paper-style Caffe references, reproduced exactly.

Oracles: ``../shared/data/caffe/seed`` — real Caffe runs of the demo's inverse net and of
paper-style inverse nets built from Caffe layers (see its README.txt).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deconvnet as dn
from deconvnet import caffe
from deconvnet.engine.compat import CAFFE_DECONVNET, demo_display

REL_TOL = 1e-4


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def demo(shared_data):
    folder = shared_data / "caffe"
    net, preprocessing = caffe.load(
        folder / "caffenet" / "caffenet_conv_deploy.prototxt",
        folder / "caffenet" / "caffenet_conv.caffemodel",
    )
    forward = np.load(folder / "seed" / "forward_butterfly.npz")
    switches = {name: torch.from_numpy(forward[f"{name}_mask"]).long() for name in POOLS}
    net.preprocessing = preprocessing
    return net, torch.from_numpy(forward["data"]), folder / "seed", switches


POOLS = ("pool1", "pool2", "pool5")


def test_our_switches_differ_from_caffe_only_at_float32_near_ties(demo):
    """Why the references are matched through Caffe's own switches: 7 of 96k differ, all ties."""
    net, data, _, switches = demo
    with torch.no_grad():
        blobs = net.forward_blobs(data)
    flipped = 0
    for pool, bottom in (("pool1", "relu1"), ("pool2", "relu2"), ("pool5", "relu5")):
        x = blobs[bottom].flatten(2)
        _, ours = torch.nn.functional.max_pool2d(
            blobs[bottom], 3, 2, ceil_mode=True, return_indices=True
        )
        differ = ours != switches[pool]
        flipped += int(differ.sum())
        a = x.gather(2, ours.flatten(2))[differ.flatten(2)]
        b = x.gather(2, switches[pool].flatten(2))[differ.flatten(2)]
        assert torch.all((a - b).abs() <= 1e-6 * a.abs())  # near-ties at float32 precision
    assert flipped <= 10


@pytest.mark.parametrize(
    ("rescale", "reference"), [(True, "seed_exact"), (False, "seed_no_rescale")]
)
def test_caffe_deconvnet_preset_matches_the_demo(demo, rescale, reference):
    net, data, seed, switches = demo
    expected = np.load(seed / f"{reference}.npz")
    with dn.Deconvnet(net, compat="caffe-deconvnet") as deconv:
        res = deconv.project(
            data, "pool5", CAFFE_DECONVNET.selection(rescale=rescale), switches=switches
        )
    got = res.images[0, 0].numpy()
    assert rel_error(got, expected["conv1"][0]) <= REL_TOL
    assert int((expected["pool5_thresholded"] > 0).sum()) == 264
    display = demo_display(res.images[0, 0], net.preprocessing)
    assert rel_error(display, expected["display_rgb"]) <= REL_TOL


def test_demo_differs_from_the_paper_default(demo):
    net, data, seed, _ = demo
    expected = np.load(seed / "seed_exact.npz")["conv1"][0]
    with dn.Deconvnet(net) as deconv:  # paper: zeiler, LRN skipped, summed collisions
        res = deconv.project(data, "pool5", CAFFE_DECONVNET.selection())
    assert rel_error(res.images[0, 0].numpy(), expected) > 0.1


@pytest.mark.parametrize(("layer", "reference"), [("pool5", "pool5"), ("relu5", "conv5")])
def test_paper_style_overwrite_references(demo, layer, reference):
    net, data, seed, switches = demo
    expected = np.load(seed / f"paper_overwrite_{reference}.npz")
    with dn.Deconvnet(net, rule="zeiler", lrn="skip", collisions="overwrite") as deconv:
        res = deconv.project(data, layer, dn.TopMaps(5), switches=switches)
    assert res.channels[0].tolist() == expected["sel_channel"].tolist()
    assert res.positions[0].tolist() == expected["sel_hw"].tolist()
    np.testing.assert_allclose(res.values[0].numpy(), expected["sel_value"], rtol=1e-5)
    for k in range(5):
        reference_image = expected["deconv1"][k]
        if np.abs(reference_image).max() == 0:
            assert float(res.images[0, k].abs().max()) == 0.0
        else:
            assert rel_error(res.images[0, k].numpy(), reference_image) <= REL_TOL
    if reference == "pool5":
        zero = [k for k in range(5) if np.abs(expected["deconv1"][k]).max() == 0]
        assert zero == [1, 2, 4]  # the overwrite rule erases three selected maxima
        with dn.Deconvnet(net) as deconv:  # summing keeps them
            summed = deconv.project(data, layer, dn.TopMaps(5))
        assert all(float(summed.images[0, k].abs().max()) > 0 for k in zero)


def test_compat_rejects_explicit_rules(demo):
    net, _, _, _ = demo
    with pytest.raises(ValueError, match="fixes rule"):
        dn.Deconvnet(net, rule="zeiler", compat="caffe-deconvnet")
    with pytest.raises(ValueError, match="not one of"):
        dn.Deconvnet(net, compat="caffe")
