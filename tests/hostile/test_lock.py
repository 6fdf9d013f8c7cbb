"""A model and one of its parts in two threads (``model`` and ``model.features``): the
per-model lock covers every module, parameter and buffer, so each call gets exactly its
single-thread result. Before, the two were locked apart and one thread's hooks fired in
the other's forward pass (a functorch internal assertion, or wrong pictures)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

import deconvnet as dn
from tests import _nets
from tests.hostile.conftest import TRACEBACK, WRONG, Tally

CALLS = 6


class Branchy(nn.Module):
    """Not a chain (the reverse pass goes through functorch), with a chain inside."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _nets.caffenet(width=4)
        self.side = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x + self.side(x))  # type: ignore[no-any-return]


def test_a_model_and_its_part_in_two_threads(tally: Tally) -> None:
    model = Branchy().eval()
    whole, part = dn.Deconvnet(model), dn.Deconvnet(model.features)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 67, 67, generator=generator)
    jobs = {
        "model": lambda: whole.project(x, "features.3", dn.MapMax(1)).images,
        "model.features": lambda: part.project(x, "3", dn.MapMax(1)).images,
    }
    expected = {name: job() for name, job in jobs.items()}
    start = threading.Barrier(2)

    def work(name: str) -> list[tuple[str, object]]:
        start.wait()
        done: list[tuple[str, object]] = []
        for _ in range(CALLS):
            try:
                done.append((name, jobs[name]()))
            except Exception as error:  # what the unguarded race raised
                done.append((name, error))
        return done

    with ThreadPoolExecutor(2) as pool:
        results = [item for chunk in pool.map(work, list(jobs)) for item in chunk]
    for name, result in results:
        with tally.case("shared submodules", name) as mark:
            if isinstance(result, Exception):
                mark(TRACEBACK, f"{name}: {type(result).__name__}: {result}")
            elif not torch.equal(result, expected[name]):  # type: ignore[arg-type]
                mark(WRONG, f"{name}: not the single-thread picture")
    assert tally.bad("shared submodules") == {}
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_lock_left_held_never_blocks_new_models(tally: Tally) -> None:
    """A thread that takes a model's lock and ends without giving it back (a bug in someone
    else's code) keeps that model locked, and only that model: new models made after the
    old one is dropped never find their parts taken (their ids cannot be the old ones')."""
    import gc

    from deconvnet.engine.hooks import model_lock

    def leak() -> bool:  # takes the lock of a model that then goes away
        model = _nets.caffenet(width=8)
        return model_lock(model).acquire(timeout=5)

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(leak).result()
    gc.collect()
    for number in range(100):
        fresh = _nets.caffenet(width=8)
        with tally.case("shared submodules", f"fresh model {number}") as mark:
            if not model_lock(fresh).acquire(timeout=1):
                mark(WRONG, f"fresh model {number} found its parts locked")
            else:
                model_lock(fresh).release()
    assert tally.bad("shared submodules") == {}
