"""The faithfulness card: exact reruns of every curve, against independent computations.

Oracles: the scan's own values (step 0), a plain forward pass of the whole, fully
perturbed image (the last step), a literal re-implementation of one intermediate step
(pixel order from ``torch.autograd.grad``, the perturbed image built pixel by pixel, the
whole image run), the mean of the random seeds' curves, and a literal numpy blur.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet import models
from deconvnet.engine.capture import forward_until
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.datasets import open_dataset
from deconvnet.instruments import faithfulness as faith
from deconvnet.instruments.faithfulness import (
    PERTURBATIONS,
    RANDOM_ORDER,
    FaithfulnessCard,
    FaithfulnessSettings,
    ImageCurves,
    UnitImage,
    area,
    faithfulness_card,
    gaussian_blur,
    scan_entries,
    scan_images,
    summarise,
)
from deconvnet.instruments.topk.scan import scan
from deconvnet.instruments.work import WorkLimitError
from tests import _nets
from tests._datasets import cifar_files

SMALL = FaithfulnessSettings(steps=4, random_seeds=2)


@pytest.fixture(scope="module")
def default_model() -> nn.Module:
    return models.load("default")


@pytest.fixture(scope="module")
def cifar_npz(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """24 real CIFAR-10 test images (3 per class of 8) as an .npz."""
    from PIL import Image

    files = cifar_files(shared_data, "test", 3)[:24]
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in files])
    path = tmp_path_factory.mktemp("cifar") / "cifar.npz"
    np.savez(path, x=pixels)
    return path


@pytest.fixture(scope="module")
def scanned(default_model: nn.Module, cifar_npz: Path) -> tuple[list[dict[str, object]], object]:
    """A real top-k scan of conv2 and conv4 (maps 0-2, k = 2), its entries as the index holds
    them, and the dataset."""
    dataset = open_dataset(cifar_npz, default_model.preprocessing)
    index = scan(default_model, dataset, ["conv2", "conv4"], k=2, maps=[0, 1, 2], batch_size=8)
    entries = scan_entries(index)
    return entries, dataset


def _unit(
    model: nn.Module, layer: str, channel: int, position: tuple[int, int], x: torch.Tensor
) -> float:
    module = model.get_submodule(layer)
    with torch.no_grad():
        out = forward_until(model, x, {layer: module})[layer]
    return float(out[0, channel, position[0], position[1]])


@pytest.mark.parametrize("layer", ["features.4", "features.10"])
def test_curves_are_exact_reruns_of_the_scan(
    default_model: nn.Module, scanned: tuple[list[dict[str, object]], object], layer: str
) -> None:
    entries, dataset = scanned
    images = scan_images(entries, dataset, layer, 1, k=2)  # type: ignore[arg-type]
    card = faithfulness_card(default_model, layer, 1, images, settings=SMALL)
    fill = torch.zeros(1, 3, 1, 1)  # the default model subtracts its mean: the mean pixel is 0
    for image, curves in zip(images, card.images, strict=True):
        assert image.expected is not None
        top, left, bottom, right = curves.box
        blurred = gaussian_blur(image.x, SMALL.sigma_for((32, 32)))
        emptied = image.x.clone()
        emptied[..., top:bottom, left:right] = fill
        smeared = image.x.clone()
        smeared[..., top:bottom, left:right] = blurred[..., top:bottom, left:right]
        ends = {
            "deletion/mean": (
                image.expected,
                _unit(default_model, layer, 1, curves.position, emptied),
            ),
            "deletion/blur": (
                image.expected,
                _unit(default_model, layer, 1, curves.position, smeared),
            ),
            "insertion/blur": (
                _unit(default_model, layer, 1, curves.position, smeared),
                image.expected,
            ),
        }
        for name, (first, last) in ends.items():
            for order, curve in curves.curves[name].items():
                assert curve.shape == (SMALL.steps + 1,)
                assert abs(curve[0] - first) <= 1e-5 * max(1.0, abs(first)), (name, order)
                assert abs(curve[-1] - last) <= 1e-5 * max(1.0, abs(last)), (name, order)
            seeds = curves.random_curves[name]
            assert seeds.shape == (SMALL.random_seeds, SMALL.steps + 1)
            np.testing.assert_allclose(
                curves.curves[name][RANDOM_ORDER], seeds.mean(axis=0), rtol=1e-12
            )
            assert not np.allclose(seeds[0], seeds[1])  # the seeds are different orders
        assert abs(curves.activation - image.expected) <= 1e-5 * abs(image.expected)


def test_an_intermediate_step_equals_a_literal_implementation(
    default_model: nn.Module, scanned: tuple[list[dict[str, object]], object]
) -> None:
    """The gradient rule's deletion curve at step 2 of 4: pixels ordered by sum |d unit/d x|
    (autograd, ties in the card's fixed order), the first round(2 n / 4) set to the mean
    pixel one by one, the whole image run."""
    entries, dataset = scanned
    layer = "features.4"
    image = scan_images(entries, dataset, layer, 2, k=1)[0]  # type: ignore[arg-type]
    card = faithfulness_card(default_model, layer, 2, [image], settings=SMALL)
    curves = card.images[0]
    assert curves.crop is not None  # conv2's field is 15 px of 32: the crop is run
    y, x = curves.position
    top, left, bottom, right = curves.box
    inputs = image.x.clone().requires_grad_(True)
    module = default_model.get_submodule(layer)
    out = forward_until(default_model, inputs, {layer: module}, keep=lambda _, o: o)[layer]
    (grad,) = torch.autograd.grad(out[0, 2, y, x], inputs)
    magnitude = grad[0, :, top:bottom, left:right].abs().sum(0).flatten()
    pixels = magnitude.numel()
    tie_break = torch.randperm(pixels, generator=torch.Generator().manual_seed(SMALL.seed))
    order = sorted(
        range(pixels), key=lambda i: (-float(magnitude[i]), int((tie_break == i).nonzero()))
    )
    count = (2 * pixels + SMALL.steps // 2) // SMALL.steps
    perturbed = image.x.clone()
    width = right - left
    for index in order[:count]:
        perturbed[0, :, top + index // width, left + index % width] = 0.0
    want = _unit(default_model, layer, 2, (y, x), perturbed)
    got = curves.curves["deletion/mean"]["gradient"][2]
    assert abs(got - want) <= 1e-5 * max(1.0, abs(want))


def test_the_crop_gives_the_whole_images_curves(
    default_model: nn.Module,
    scanned: tuple[list[dict[str, object]], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries, dataset = scanned
    images = scan_images(entries, dataset, "features.4", 0, k=1)  # type: ignore[arg-type]
    cropped = faithfulness_card(default_model, "features.4", 0, images, settings=SMALL).images[0]
    monkeypatch.setattr(faith, "CROP_MAX_SHARE", 0.0)
    whole = faithfulness_card(default_model, "features.4", 0, images, settings=SMALL).images[0]
    assert cropped.crop is not None and whole.crop is None
    for name in PERTURBATIONS:
        for order in SMALL.orders:
            np.testing.assert_allclose(
                cropped.curves[name][order], whole.curves[name][order], rtol=1e-5, atol=1e-5
            )


def test_units_read_the_same_on_their_crop_for_every_position() -> None:
    """unit_crop on a conv/pool/LRN chain with padding and ceil-mode pools: every unit of
    every map position (borders included) equals the whole image's."""
    from deconvnet.engine.receptive import receptive_fields
    from deconvnet.instruments.occlusion.splice import unit_crop

    model = _nets.zfnet(width=16)
    x = torch.randn(1, 3, 67, 61, generator=torch.Generator().manual_seed(0))
    layers = {"5": model[5], "9": model[9]}
    fields = receptive_fields(model, tuple(x.shape))
    for name, module in layers.items():
        with torch.no_grad():
            full = forward_until(model, x, {name: module})[name]
        for y in range(full.shape[2]):
            for x_pos in range(full.shape[3]):
                crop = unit_crop(fields[name], y, x_pos, (67, 61))
                top, left, bottom, right = crop.box
                with torch.no_grad():
                    part = forward_until(model, x[..., top:bottom, left:right], {name: module})[
                        name
                    ]
                got = part[0, :, crop.unit[0], crop.unit[1]]
                torch.testing.assert_close(got, full[0, :, y, x_pos], rtol=1e-5, atol=1e-5)


def test_images_without_a_position_use_the_strongest_unit(default_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    card = faithfulness_card(
        default_model, "conv3", 5, [UnitImage(x, name="noise")], settings=SMALL
    )
    module = default_model.get_submodule("features.8")
    with torch.no_grad():
        maps = forward_until(default_model, x, {"features.8": module})["features.8"][0, 5]
    y, x_pos = divmod(int(maps.flatten().argmax()), maps.shape[1])
    assert card.images[0].position == (y, x_pos)
    assert card.images[0].activation == pytest.approx(float(maps.max()), rel=1e-6)


def test_auc_and_gain_follow_their_definitions(default_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    card = faithfulness_card(default_model, "conv2", 7, [UnitImage(x)], settings=SMALL)
    image = card.images[0]
    assert image.active
    for name, perturbation in PERTURBATIONS.items():
        for order in SMALL.orders:
            curve = image.curves[name][order] / image.activation
            assert image.auc[name][order] == pytest.approx(
                float(np.trapezoid(curve, dx=1 / SMALL.steps))
            )
        for rule in SMALL.rules:
            difference = image.auc[name][RANDOM_ORDER] - image.auc[name][rule]
            sign = 1 if perturbation.deletes else -1
            assert image.gain[name][rule] == pytest.approx(sign * difference)
    assert card.gain == {p: dict(image.gain[p]) for p in PERTURBATIONS}


def test_an_image_where_the_unit_does_not_fire_has_no_numbers(default_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    module = default_model.get_submodule("features.4")
    with torch.no_grad():
        maps = forward_until(default_model, x, {"features.4": module})["features.4"][0]
    channel = int(maps.flatten(1).max(dim=1).values.argmin())
    weakest = divmod(int(maps[channel].flatten().argmin()), maps.shape[2])
    assert float(maps[channel][weakest]) <= 0
    card = faithfulness_card(
        default_model, "conv2", channel, [UnitImage(x, position=weakest)], settings=SMALL
    )
    assert not card.images[0].active and card.active_images == ()
    assert card.auc[faith.DELETION]["gradient"] is None and card.mean_curves() == {}


def test_a_scan_value_that_does_not_match_is_refused(default_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with pytest.raises(InputError, match="scan recorded"):
        faithfulness_card(
            default_model,
            "conv2",
            1,
            [UnitImage(x, position=(3, 3), expected=123.0)],
            settings=SMALL,
        )


def test_bad_requests_are_one_line_errors(default_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(SelectionError):
        faithfulness_card(default_model, "conv2", 96, [UnitImage(x)], settings=SMALL)
    with pytest.raises(SelectionError):
        faithfulness_card(
            default_model, "conv2", 0, [UnitImage(x, position=(16, 0))], settings=SMALL
        )
    with pytest.raises(InputError):
        faithfulness_card(default_model, "conv2", 0, [], settings=SMALL)
    with pytest.raises(InputError):
        faithfulness_card(default_model, "conv2", 0, [UnitImage(x[0])], settings=SMALL)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        faithfulness_card(default_model, "conv2", 0, [UnitImage(nan)], settings=SMALL)
    for bad in (
        {"steps": 0},
        {"random_seeds": 0},
        {"rules": ("nope",)},
        {"blur_sigma": -1.0},
        {"rules": ()},
        {"steps": True},
    ):
        with pytest.raises(InputError):
            FaithfulnessSettings(**bad)  # type: ignore[arg-type]


def test_work_is_counted_first_and_bounded(default_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    calls: list[tuple[int, int | None]] = []
    faithfulness_card(
        default_model,
        "conv2",
        3,
        [UnitImage(x)] * 2,
        settings=SMALL,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = 2 * faith.image_work(SMALL)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(WorkLimitError, match="--max-work"):
        faithfulness_card(
            default_model, "conv2", 3, [UnitImage(x)], settings=SMALL, max_work=total // 2 - 1
        )


def test_the_model_is_left_as_it_was(default_model: nn.Module) -> None:
    model = _nets.caffenet(width=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(1, 3, 99, 99, generator=torch.Generator().manual_seed(8))
    faithfulness_card(model, "4", 3, [UnitImage(x)], settings=SMALL)
    with pytest.raises(InputError):
        faithfulness_card(
            model, "4", 3, [UnitImage(x, position=(2, 2), expected=1e9)], settings=SMALL
        )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and not any(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_gaussian_blur_equals_a_literal_mirrored_filter() -> None:
    x = torch.randn(1, 3, 9, 11, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    sigma = 1.3
    got = gaussian_blur(x, sigma)[0].numpy()
    radius = 4
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    image = x[0].numpy()
    want = np.zeros_like(image)

    def mirror(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    for c in range(3):
        for row in range(9):
            for col in range(11):
                want[c, row, col] = sum(
                    taps[a + radius]
                    * taps[b + radius]
                    * image[c, mirror(row + a, 9), mirror(col + b, 11)]
                    for a in range(-radius, radius + 1)
                    for b in range(-radius, radius + 1)
                )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_area_is_the_trapezoid() -> None:
    assert area(np.array([1.0, 0.0]), 1) == 0.5
    assert area(np.linspace(1, 0, 21), 20) == pytest.approx(0.5)
    assert area(np.ones(5), 4) == 1.0


def test_summarise_takes_medians_and_shares_per_layer() -> None:
    def card(layer: str, gain: float | None) -> FaithfulnessCard:
        settings = FaithfulnessSettings(rules=("gradient",))
        curves = {p: {"gradient": np.zeros(21), RANDOM_ORDER: np.zeros(21)} for p in PERTURBATIONS}
        image = ImageCurves(
            name="",
            position=(0, 0),
            box=(0, 0, 1, 1),
            pixels=1,
            activation=1.0 if gain is not None else 0.0,
            curves=curves,
            random_curves={},
            auc={p: {"gradient": 0.0, RANDOM_ORDER: 0.0} for p in PERTURBATIONS},
            gain={p: {"gradient": gain} for p in PERTURBATIONS},
            crop=None,
        )
        return FaithfulnessCard(layer, 0, (image,), settings)

    summary = summarise(
        [card("a", 0.3), card("a", -0.1), card("a", 0.2), card("b", None), card("b", 0.5)]
    )
    assert [s.layer for s in summary] == ["a", "b"]
    assert summary[0].units == 3 and summary[1].units == 1
    assert summary[0].median_gain[faith.DELETION]["gradient"] == pytest.approx(0.2)
    assert summary[0].positive[faith.DELETION]["gradient"] == pytest.approx(2 / 3)
    assert summary[1].median_gain[faith.DELETION]["gradient"] == pytest.approx(0.5)


def test_scan_images_refuses_an_id_the_dataset_lacks(
    scanned: tuple[list[dict[str, object]], object],
) -> None:
    entries, dataset = scanned
    bad = [dict(entries[0], image_id=10_000)]
    with pytest.raises(InputError, match="does not have"):
        scan_images(bad, dataset, str(entries[0]["layer"]), int(entries[0]["map"]))  # type: ignore[arg-type]


def test_settings_are_a_value(default_model: nn.Module) -> None:
    changed = dataclasses.replace(SMALL, steps=7)
    assert changed.fractions().tolist() == [i / 7 for i in range(8)]
    assert changed.orders == (*SMALL.rules, RANDOM_ORDER)


def test_a_cached_card_is_the_card_and_a_bad_entry_is_computed_again(
    default_model: nn.Module, tmp_path: Path
) -> None:
    from deconvnet.instruments.cache import ResultCache

    cache = ResultCache(tmp_path)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    images = [UnitImage(x, name="noise")]
    first = faithfulness_card(default_model, "conv2", 3, images, settings=SMALL, cache=cache)
    again = faithfulness_card(default_model, "conv2", 3, images, settings=SMALL, cache=cache)
    assert not first.cached and again.cached and again.key == first.key
    for made, read in zip(first.images, again.images, strict=True):
        assert (read.position, read.box, read.activation) == (
            made.position,
            made.box,
            made.activation,
        )
        for p in PERTURBATIONS:
            for order, curve in made.curves[p].items():
                assert np.array_equal(read.curves[p][order], curve)
            assert np.array_equal(read.random_curves[p], made.random_curves[p])
    assert again.gain == first.gain and again.auc == first.auc
    # another setting, another image or another map is another entry
    other = faithfulness_card(
        default_model, "conv2", 3, images, settings=dataclasses.replace(SMALL, seed=1), cache=cache
    )
    assert not other.cached and other.key != first.key
    (entry,) = [p for p in (tmp_path / "faithfulness").glob("*.json") if first.key in p.name]
    text = entry.read_text()
    entry.write_text(text.replace('"pixels"', '"pixel_count"', 1))  # not the schema
    assert not faithfulness_card(
        default_model, "conv2", 3, images, settings=SMALL, cache=cache
    ).cached
    assert faithfulness_card(default_model, "conv2", 3, images, settings=SMALL, cache=cache).cached
