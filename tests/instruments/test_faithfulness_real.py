"""Real data, real weights (``-m slow``): the issue's checks of the faithfulness card and of
the optimised images.

* On the default model over the CIFAR-10 test folder and on SqueezeNet v1.0 (deep
  compression) over the 200 ImageNet sample photos, the gradient rule's deletion gain over
  random (mean-pixel baseline) is positive for most units at every scanned layer.
* For the default model's conv2/conv4 and SqueezeNet's fire2/fire5, the optimised image's
  activation exceeds the unit's top-1 over the scanned data for at least 90 % of the units
  tried.

The command-line runs behind the README's figures and the numbers of the closing note
used more units; these tests take a sample so they finish in minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from deconvnet import models
from deconvnet.inputs.datasets import ImageDataset, open_dataset
from deconvnet.instruments.dream import dream
from deconvnet.instruments.faithfulness import (
    DELETION,
    FaithfulnessSettings,
    faithfulness_card,
    scan_entries,
    scan_images,
    summarise,
)
from deconvnet.instruments.topk.scan import TopKIndex, scan
from deconvnet.models.card import card_of

pytestmark = pytest.mark.slow

CASES = {
    "default": (None, ("cifar10", "test"), ("conv1", "conv2", "conv3", "conv4")),
    "squeezenet1_0": ("deep-compression", ("imagenet-sample",), ("fire2", "fire5", "fire9")),
}
UNITS = {"default": "random:8", "squeezenet1_0": "random:5"}
DREAMED = {"default": ("conv2", "conv4"), "squeezenet1_0": ("fire2", "fire5")}


@pytest.fixture(scope="module", params=list(CASES))
def scanned(
    request: pytest.FixtureRequest, shared_data: Path
) -> tuple[str, nn.Module, ImageDataset, TopKIndex]:
    name = request.param
    weights, folder, layers = CASES[name]
    model = models.load(name, weights=weights) if weights else models.load(name)
    dataset = open_dataset(shared_data.joinpath(*folder), model.preprocessing)
    index = scan(model, dataset, list(layers), k=2, maps=UNITS[name], batch_size=32)
    return name, model, dataset, index


def test_the_gradients_deletion_beats_random_for_most_units_at_every_layer(
    scanned: tuple[str, nn.Module, ImageDataset, TopKIndex],
) -> None:
    name, model, dataset, index = scanned
    entries = scan_entries(index)
    cards = []
    for layer in index.layers:
        for channel in index.state.layers[layer].channels.tolist():
            images = scan_images(entries, dataset, layer, channel, k=2)
            cards.append(
                faithfulness_card(
                    model, layer, channel, images, max_work=None, settings=FaithfulnessSettings()
                )
            )
    summary = summarise(cards)
    assert [s.layer for s in summary] == index.layers
    shares = {s.layer: s.positive[DELETION]["gradient"] for s in summary}
    print(name, "share of units with a positive gradient deletion gain:", shares)
    assert all(share is not None and share > 0.5 for share in shares.values()), shares


def test_optimised_images_beat_the_datasets_top1(
    scanned: tuple[str, nn.Module, ImageDataset, TopKIndex],
) -> None:
    name, model, _, index = scanned
    beaten, tried = 0, 0
    for alias in DREAMED[name]:
        layer = card_of(model).aliases[alias]
        top = index.state.layers[layer]
        top1 = {int(c): float(top.values[0, i]) for i, c in enumerate(top.channels.tolist())}
        maps = sorted(top1)[:3]
        for result in dream(model, layer, maps, dataset_top1=top1):
            tried += 1
            beaten += bool(result.beats_dataset)
    print(name, f"{beaten} of {tried} optimised images above the dataset's top-1")
    assert beaten >= 0.9 * tried
