"""One model shared by threads: every call gives the single-thread result, bit for bit.

Issue 11, point 4: two threads calling ``project()`` on one model got each other's hooks
(8 of 240 calls returned wrong images, 105 raised). Engine entry points now take a lock per
model (:func:`deconvnet.engine.hooks.model_lock`), so calls on one model run one at a time
and calls on different models still run together.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvnet as dn
from deconvnet.engine.hooks import model_lock
from deconvnet.engine.receptive import receptive_fields
from tests import _nets

CALLS_PER_THREAD = 6


class _Branchy(nn.Module):
    """Not a chain: the projection goes through ``torch.func.vjp`` (the hooked forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _nets.caffenet(width=4)
        self.side = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x + self.side(x))  # type: ignore[no-any-return]


def _jobs(model: nn.Module) -> list[tuple[str, dn.Selection, torch.Tensor]]:
    layers = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.ReLU)]
    generator = torch.Generator().manual_seed(0)
    jobs = []
    for index in range(8):
        x = torch.randn(1, 3, 67, 67, generator=generator)
        selection: dn.Selection = dn.TopMaps(2) if index % 2 else dn.MapMax(index % 3)
        jobs.append((layers[index % len(layers)], selection, x))
    return jobs


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("make", [lambda: _nets.caffenet(width=4), _Branchy], ids=["chain", "tree"])
def test_threads_on_one_model_match_one_thread(threads: int, make: Callable[[], nn.Module]) -> None:
    model = make().eval()
    net = dn.Deconvnet(model)
    jobs = _jobs(model)
    expected = [net.project(x, layer, selection).images for layer, selection, x in jobs]
    fields = receptive_fields(model, (1, 3, 67, 67))
    start = threading.Barrier(threads)

    def work(offset: int) -> list[tuple[int, torch.Tensor]]:
        start.wait()
        done = []
        for call in range(CALLS_PER_THREAD):
            which = (offset + call) % len(jobs)
            layer, selection, x = jobs[which]
            done.append((which, net.project(x, layer, selection).images))
            assert receptive_fields(model, (1, 3, 67, 67)) == fields
        return done

    with ThreadPoolExecutor(threads) as pool:
        results = [item for part in pool.map(work, range(threads)) for item in part]
    assert len(results) == threads * CALLS_PER_THREAD
    for which, images in results:
        assert torch.equal(images, expected[which]), which
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_the_lock_is_per_model_and_reentrant() -> None:
    first, second = _nets.caffenet(), _nets.caffenet()
    assert model_lock(first) is model_lock(first)
    assert model_lock(first) is not model_lock(second)
    with model_lock(first), model_lock(first):  # an entry point calling another
        others = ThreadPoolExecutor(1)
        assert others.submit(lambda: model_lock(second).acquire(timeout=5)).result()
        assert not others.submit(lambda: model_lock(first).acquire(timeout=0.1)).result()
        others.shutdown()


def _waits_for_the_lock(model: nn.Module, call: Callable[[], object]) -> None:
    """``call`` blocks while another thread holds the model's lock, then completes."""
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(call()))
    with model_lock(model):
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive()  # waiting for the lock
    worker.join(timeout=60)
    assert not worker.is_alive() and len(results) == 1  # finished, without raising


def test_instruments_that_hook_the_model_take_its_lock(tmp_path: Path) -> None:
    from deconvnet.instruments.occlusion import Occluder, occlude
    from deconvnet.instruments.sanity import split_layers
    from deconvnet.instruments.topk.scan import scan
    from tests import _datasets

    classifier = _nets.quadrant_classifier()
    x = torch.rand(1, 1, 32, 32)
    occluder = Occluder(16, 16, fill=0.0)
    _waits_for_the_lock(classifier, lambda: occlude(classifier, x, "0", occluder))
    _waits_for_the_lock(classifier, lambda: split_layers(classifier, x, "0"))
    net, data = _nets.tie_net(), _datasets.tie_images(tmp_path)
    _waits_for_the_lock(net, lambda: scan(net, data, ["0"], k=2, workers=0))


class _PooledBlock(nn.Module):
    """Convolution, ReLU and a functional 3x3/2 max-pool: the pool runs while the block
    itself is the innermost running module, after its child module has finished."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv(x)), 3, 2)

    def switches(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv(x)), 3, 2, return_indices=True)[1]


def _pooled(name: str, widths: list[int], seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks = [_PooledBlock(c, o) for c, o in itertools.pairwise(widths)]
        inner = nn.Sequential(*blocks, nn.Conv2d(widths[-1], 6, 3))
    return nn.Sequential(OrderedDict([(name, inner)])).eval()


def _block_switches(model: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each block's argmax indices for ``x``, keyed by the block's name."""
    (name, inner), found = next(iter(model.named_children())), {}
    with torch.no_grad():
        for index, block in enumerate(inner):
            if isinstance(block, _PooledBlock):
                found[f"{name}.{index}"] = block.switches(x)
            x = block(x)
    return found


def test_two_models_in_two_threads_keep_their_own_module_stacks() -> None:
    """Issue 22, point 4: the rule mode's stack of running modules (which finds the module
    whose given switches a max-pool uses, and names a module in errors) was one process-wide
    list that every forward pass cleared. Two threads, each with its own model, pooling
    blocks, layer, rule and switches (taken from another input, so they differ from the
    forward's own), run 100 projections each at once: every one equals its single-thread
    result, bit for bit."""
    first = _pooled("alex", [3, 8, 8, 8], seed=0)
    second = _pooled("zf", [3, 6, 10], seed=1)
    generator = torch.Generator().manual_seed(3)
    jobs = []
    for model, layer, rule, shape in (
        (first, "alex.3", "zeiler", (1, 3, 41, 41)),
        (second, "zf.1", "guided", (1, 3, 37, 37)),
    ):
        x, other = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        switches = _block_switches(model, other)
        net = dn.Deconvnet(model, rule)
        expected = net.project(x, layer, dn.TopMaps(3), switches=switches).images
        natural = net.project(x, layer, dn.TopMaps(3)).images
        assert not torch.equal(expected, natural)  # the switches matter
        jobs.append((net, x, layer, switches, expected))
    start = threading.Barrier(len(jobs))

    def work(job: int) -> int:
        net, x, layer, switches, expected = jobs[job]
        start.wait()
        wrong = 0
        for _ in range(100):
            images = net.project(x, layer, dn.TopMaps(3), switches=switches).images
            wrong += not torch.equal(images, expected)
        return wrong

    with ThreadPoolExecutor(len(jobs)) as pool:
        assert list(pool.map(work, range(len(jobs)))) == [0, 0]  # 70 and 88 wrong before
