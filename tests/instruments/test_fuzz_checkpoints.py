"""Mutation fuzzer over top-k checkpoints: byte flips, truncations, splices with another
scan's checkpoint, and field tampering (one field per case, both re-signed with a correct
checksum and left unsigned), each resumed with ``scan(resume=True)``.

Each case runs in a worker process under a timeout (tests/_fuzz.py). Allowed outcomes: one
:class:`~deconvnet.errors.InputError` line (``CheckpointError`` is one), or a resumed scan
whose result equals the uninterrupted scan exactly (tests/_checkpoints.py: values, ids,
positions, images read, skipped, digests, content digest, names). Anything else is a crash;
a different result is a wrong result accepted; a timeout is a hang. CI runs FAST_CASES;
``-m slow`` runs SLOW_CASES.

One outcome is reported apart, "within tolerance": a re-signed edit of a ranked value by
less than :data:`~deconvnet.instruments.topk.scan.VERIFY_RTOL` (relative), which resuming
cannot tell from the float rounding of batching, so it keeps it; everything else about such
a result (ids, positions, counts, digests) must still equal the fresh scan.
"""

from __future__ import annotations

import random
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from deconvnet.errors import InputError
from deconvnet.instruments.topk import checkpoint as checkpoint_file
from deconvnet.instruments.topk.scan import VERIFY_RTOL
from deconvnet.instruments.topk.state import EMPTY_ID
from tests import _checkpoints, _fuzz

FAST_CASES, SLOW_CASES = 50, 3000
SECONDS_PER_CASE = 20.0  # generous: two cores shared by several test runs
MUTATIONS = ("flip", "truncate", "splice", "tamper-signed", "tamper-signed", "tamper-unsigned")
NUMBERS: tuple[Any, ...] = (
    0, 1, -1, -5, 3, 4, 5, 6, 7, 12, 13, 14, 10**9, 2**62, 2**63 - 1, EMPTY_ID - 1,
    True, None, "6", 6.0, float("nan"), float("inf"), -float("inf"), [], {},
)  # fmt: skip


@cache
def fixture() -> tuple[Path, bytes, bytes, tuple[Any, ...]]:
    """(work folder, the partial checkpoint, another scan's checkpoint, fresh result)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-checkpoints-"))
    data = _checkpoints.dataset(folder)
    path = _checkpoints.partial_checkpoint(folder, data)
    other = folder / "other"
    other.mkdir()
    donor = _checkpoints.partial_checkpoint(other, _checkpoints.dataset(other))
    payload = checkpoint_file.read_payload(donor)
    payload["done"], payload["k"] = 6, 3  # same data, another scan: a plausible donor
    return (
        folder,
        path.read_bytes(),
        _checkpoints.signed(payload),
        _checkpoints.summary(_checkpoints.fresh(data)),
    )


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every dict entry and tensor in a payload (tensors count as leaves)."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_leaves(value, (*path, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_leaves(value, (*path, index)))
    return found


def _tamper(payload: dict, rng: random.Random) -> str:
    """Change one field of ``payload`` in place; say what was done."""
    path = rng.choice(_leaves(payload))
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    value = parent[key]
    choice = rng.randrange(4)
    if choice == 0 and isinstance(parent, dict):
        del parent[key]
        return f"deleted {path}"
    if isinstance(value, torch.Tensor) and value.numel() and choice < 3:
        tensor = value.clone()
        flat = tensor.view(-1)
        at = rng.randrange(flat.numel())
        if tensor.dtype == torch.uint8:
            flat[at] ^= rng.randint(1, 255)
        elif tensor.is_floating_point():
            flat[at] = rng.choice([flat[at] + 1, flat[at] * 2, -flat[at], float("nan"), 1e9])
        else:
            flat[at] = rng.choice([-1, 0, 1, 2, 5, 12, 13, EMPTY_ID, int(flat[at]) + 1])
        parent[key] = tensor
        return f"element {at} of {path}"
    if isinstance(value, torch.Tensor) and choice == 3:
        parent[key] = rng.choice([value[:-1], value.float(), value.double(), value.tolist()])
        return f"reshaped or retyped {path}"
    parent[key] = rng.choice(NUMBERS)
    return f"{path} = {parent[key]!r}"


def mutate(number: int) -> tuple[str, bytes]:
    """Case ``number``: (what was done, the mutated checkpoint bytes), deterministic."""
    rng = random.Random(number)
    folder, original, donor, _ = fixture()
    kind = MUTATIONS[number % len(MUTATIONS)]
    data = bytearray(original)
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        return kind, bytes(data)
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(len(data))])
    if kind == "splice":
        start = rng.randrange(len(donor))
        piece = donor[start : start + rng.randint(1, 512)]
        at = rng.randrange(len(data))
        data[at : at + rng.choice([0, len(piece)])] = piece
        return kind, bytes(data)
    path = folder / "tampered.pt"
    path.write_bytes(original)
    payload = checkpoint_file.read_payload(path)
    path.unlink()
    what = _tamper(payload, rng)
    if kind == "tamper-signed":
        return f"signed: {what}", _checkpoints.signed(payload)
    first_line, _, _ = original.partition(b"\n")
    body = _checkpoints.signed(payload).partition(b"\n")[2]
    return f"unsigned: {what}", first_line + b"\n" + body


def case(number: int) -> tuple[str, str]:
    """Run one case (in the worker): ``("refused" | "identical" | "wrong" | crash, detail)``."""
    folder, _, _, expected = fixture()
    what, data = mutate(number)
    path = folder / f"case{number}.pt"
    path.write_bytes(data)
    try:
        resumed = _checkpoints.resume(_checkpoints.dataset(folder), path)
    except InputError as error:
        message = str(error)
        if "\n" in message or not message:
            return _fuzz.CRASH, f"{what}: not one line: {message!r}"
        return "refused", f"{what}: {message[:160]}"
    finally:
        path.unlink(missing_ok=True)
    found = _checkpoints.summary(resumed)
    if found == expected:
        return "identical", what
    if _only_values_within_tolerance(found, expected):
        return "within tolerance", what
    return "wrong", f"{what}: resumed to a different result"


def _only_values_within_tolerance(found: tuple[Any, ...], expected: tuple[Any, ...]) -> bool:
    if found[1:] != expected[1:] or len(found[0]) != len(expected[0]):
        return False
    for (*got_keys, got), (*want_keys, want) in zip(
        ((n, c, i, p, v) for n, c, v, i, p in found[0]),
        ((n, c, i, p, v) for n, c, v, i, p in expected[0]),
        strict=True,
    ):
        if got_keys != want_keys or len(got) != len(want):
            return False
        if any(abs(a - b) > VERIFY_RTOL * max(1.0, abs(b)) for a, b in zip(got, want, strict=True)):
            return False
    return True


def _run(count: int, offset: int) -> _fuzz.Report:
    report = _fuzz.run_cases(
        "tests.instruments.test_fuzz_checkpoints:case",
        list(range(offset, offset + count)),
        SECONDS_PER_CASE,
    )
    print(f"checkpoint fuzz: {report.total} cases {dict(report.counts)}")
    for kind in (_fuzz.CRASH, _fuzz.HANG, "wrong"):
        assert not report.counts[kind], report.examples[kind]
    assert report.total == count
    return report


def test_checkpoint_mutations_fast() -> None:
    report = _run(FAST_CASES, offset=0)
    assert report.counts["refused"] > FAST_CASES // 2


@pytest.mark.slow
def test_checkpoint_mutations_slow() -> None:
    report = _run(SLOW_CASES, offset=100_000)
    assert report.counts["refused"] > SLOW_CASES // 2
