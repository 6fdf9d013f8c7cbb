"""The sanity scores of one unit per rule: the cascading randomisation's own rows, cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from deconvnet import models
from deconvnet.engine.selection import Neuron
from deconvnet.errors import InputError, SelectionError
from deconvnet.instruments.cache import ResultCache
from deconvnet.instruments.sanity import cascading_randomisation
from deconvnet.instruments.unit_sanity import CACHE_KIND, sanity_work, unit_sanity
from deconvnet.instruments.work import WorkLimitError


@pytest.fixture(scope="module")
def default_model() -> nn.Module:
    return models.load("default")


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(11))


def test_scores_are_the_cascading_randomisations_rows(
    default_model: nn.Module, image: torch.Tensor, tmp_path: Path
) -> None:
    found = unit_sanity(
        default_model, image, "conv3", 4, rules=("guided", "gradient"), cache=ResultCache(tmp_path)
    )
    with torch.no_grad():
        maps = default_model.features[:9](image)[0, 4]  # conv3 is features.8
    assert found.position == divmod(int(maps.flatten().argmax()), maps.shape[1])
    for rule in ("guided", "gradient"):
        rows = cascading_randomisation(
            default_model, image, "features.8", Neuron(4, *found.position), rule=rule
        ).rows
        steps = found.steps[rule]
        assert [s.randomised for s in steps] == [len(r.randomised) for r in rows]
        assert [s.spearman for s in steps] == [r.spearman for r in rows]
        assert [s.ssim for s in steps] == [r.ssim for r in rows]
        assert found.final(rule) == steps[-1]
    assert list(found.steps) == ["guided", "gradient"]


def test_a_second_request_is_read_from_the_cache(
    default_model: nn.Module, image: torch.Tensor, tmp_path: Path
) -> None:
    cache = ResultCache(tmp_path)
    one = ("gradient",)
    made = unit_sanity(default_model, image, "conv2", 1, (4, 4), rules=one, cache=cache)
    read = unit_sanity(default_model, image, "conv2", 1, (4, 4), rules=one, cache=cache)
    assert not made.cached and read.cached and read.steps == made.steps and read.key == made.key
    other = unit_sanity(default_model, image, "conv2", 1, (4, 5), rules=one, cache=cache)
    assert not other.cached and other.key != made.key
    entry = tmp_path / CACHE_KIND / f"{made.key}.json"
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "map": 2}))
    assert not unit_sanity(default_model, image, "conv2", 1, (4, 4), rules=one, cache=cache).cached


def test_bad_requests_are_refused(default_model: nn.Module, image: torch.Tensor) -> None:
    with pytest.raises(SelectionError):
        unit_sanity(default_model, image, "conv2", 500)
    with pytest.raises(SelectionError):
        unit_sanity(default_model, image, "conv2", 0, (99, 0))
    with pytest.raises(InputError):
        unit_sanity(default_model, image, "conv2", 0, rules=("nope",))
    with pytest.raises(InputError):
        unit_sanity(default_model, image[0], "conv2", 0)
    work = sanity_work(default_model, image, "conv2", 3)
    assert work == 3 * 3  # two layers feed conv2: trained + 2 steps, per rule
    with pytest.raises(WorkLimitError):
        unit_sanity(default_model, image, "conv2", 0, max_work=work - 1)
