"""Resume integrity (deconvnet.instruments.topk.checkpoint and the scan's resume checks).

Oracle: one uninterrupted scan of the same data (tests/_checkpoints.py); integer
arithmetic makes every value exact, so "identical" means equal, no tolerance. Tampered
checkpoints are re-signed (a correct checksum over the tampered payload) so that the field
checks, not the checksum, must refuse them; unsigned damage must fail the checksum.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deconvnet import topk
from deconvnet.errors import CheckpointError, InputError
from deconvnet.inputs.datasets import ImageFolder
from deconvnet.instruments.topk import checkpoint as checkpoint_file
from deconvnet.instruments.topk.state import TopKState
from deconvnet.storage.atomic import remove_stale_temporaries
from tests import _checkpoints, _datasets, _nets
from tests._fuzz import deadline
from tests.instruments.test_topk import brute_force, state_as_lists


@pytest.fixture
def setup(tmp_path: Path):
    data = _checkpoints.dataset(tmp_path)
    return data, _checkpoints.partial_checkpoint(tmp_path, data)


def test_an_intact_checkpoint_resumes_to_the_uninterrupted_result(setup) -> None:
    data, path = setup
    payload = checkpoint_file.read_payload(path)
    assert payload["done"] == _checkpoints.DONE
    resumed = _checkpoints.resume(data, path)
    fresh = _checkpoints.fresh(data)
    assert _checkpoints.summary(resumed) == _checkpoints.summary(fresh)
    assert resumed.content_fingerprint == fresh.content_fingerprint


def _set(*keys: str, value: Any) -> Callable[[dict], None]:
    def tamper(payload: dict) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return tamper


def _drop(*keys: str) -> Callable[[dict], None]:
    def tamper(payload: dict) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return tamper


def _edit_tensor(layer: str, key: str, edit: Callable[[torch.Tensor], torch.Tensor]):
    def tamper(payload: dict) -> None:
        top = payload["state"]["layers"][layer]
        top[key] = edit(top[key].clone())

    return tamper


def _assign(index: tuple, value: float):
    def edit(tensor: torch.Tensor) -> torch.Tensor:
        tensor[index] = value
        return tensor

    return edit


def _swap_ranks(tensor: torch.Tensor) -> torch.Tensor:
    tensor[[0, 1]] = tensor[[1, 0]]
    return tensor


def _lower_done_and_seen(payload: dict) -> None:
    payload["done"] = 4
    payload["state"]["images_seen"] = 4


def _flip_digest(payload: dict) -> None:
    payload["state"]["digests"]["sha256"][0, 0] ^= 1


TAMPERED = {
    "done=10^9": (_set("done", value=10**9), r"done=1000000000 is outside \[0, 13\]"),
    "done=-5": (_set("done", value=-5), r"done=-5 is outside"),
    "done=0": (_set("done", value=0), r"images_seen=6 is outside \[0, 0\]"),
    "done lower than true": (_set("done", value=4), r"images_seen=6 is outside \[0, 4\]"),
    "done and images_seen lower": (_lower_done_and_seen, r"image id [45] is not among"),
    "done a bool": (_set("done", value=True), r"'done' is bool, not an int"),
    "images_seen higher": (_set("state", "images_seen", value=7), r"images_seen=7 is outside"),
    "k changed": (_set("state", "k", value=3), r"state k=3"),
    "skipped an unscanned id": (_set("state", "skipped", value=[[12, "x"]]), r"skipped image"),
    "missing state": (_drop("state"), r"lacks its 'state'"),
    "missing done": (_drop("done"), r"lacks its 'done'"),
    "missing fingerprint": (_drop("fingerprint"), r"lacks its 'fingerprint'"),
    "missing layers": (_drop("state", "layers"), r"lacks state field 'layers'"),
    "missing digests": (_drop("state", "digests"), r"lacks state field 'digests'"),
    "missing positions": (_drop("state", "layers", "3", "positions"), r"needs a dict with"),
    "layers not a dict": (_set("state", "layers", value=[1, 2]), r"'layers' is not a dict"),
    "values float32": (
        _edit_tensor("3", "values", lambda t: t.float()),
        r"values must be torch.float64",
    ),
    "a rank dropped": (_edit_tensor("0", "image_ids", lambda t: t[:3]), r"image_ids must be"),
    "an image twice in a map": (
        _edit_tensor("0", "image_ids", lambda t: torch.cat([t[:1], t[:1], t[2:]])),
        r"same image twice|rank order|among the images",
    ),
    "ranks swapped": (_edit_tensor("3", "values", _swap_ranks), r"not in rank order"),
    "a value raised": (
        _edit_tensor("3", "values", _assign((0, 1), 1e6)),
        r"the model gives|maximum differs from the top-1",
    ),
    "a position moved": (
        _edit_tensor("3", "positions", _assign((0, 0, 0), 3)),
        r"the model gives",
    ),
    "a position outside the map": (
        _edit_tensor("0", "positions", _assign((0, 0, 1), 50)),
        r"outside its maps",
    ),
    "an image id never read": (
        _edit_tensor("3", "image_ids", _assign((0, 0), 11)),
        r"image id 11 is not among the images read",
    ),
    "a NaN value": (_edit_tensor("0", "values", _assign((1, 1), float("nan"))), r"NaN"),
    "channels changed": (
        _edit_tensor("3", "channels", lambda t: t + 1),
        r"other maps of layer .3.|the model gives|which has 5 maps|maps differ from the top-k",
    ),
    "a digest altered": (_flip_digest, r"changed since the scan"),
    "content not hex": (_set("state", "content", value="zz"), r"'content' is not 64 hex"),
}


@pytest.mark.parametrize("case", list(TAMPERED), ids=list(TAMPERED))
def test_tampered_and_resigned_checkpoints_are_refused_in_one_line(setup, case: str) -> None:
    data, path = setup
    tamper, message = TAMPERED[case]
    payload = checkpoint_file.read_payload(path)
    tamper(payload)
    path.write_bytes(_checkpoints.signed(payload))
    with pytest.raises(CheckpointError, match=message) as info:
        _checkpoints.resume(data, path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("where", [0, 40, 200, -1])
def test_a_flipped_byte_fails_the_checksum(setup, where: int) -> None:
    data, path = setup
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"checksum|not a top-k scan checkpoint"):
        _checkpoints.resume(data, path)


def test_truncated_and_old_format_checkpoints_are_refused(setup) -> None:
    data, path = setup
    whole = path.read_bytes()
    for size in (0, 10, 100, len(whole) - 1):
        path.write_bytes(whole[:size])
        with pytest.raises(CheckpointError):
            _checkpoints.resume(data, path)
    torch.save({"format": "deconvnet-topk-checkpoint/1", "done": 6}, path)
    with pytest.raises(CheckpointError, match="not a top-k scan checkpoint of this version"):
        _checkpoints.resume(data, path)


def test_a_fifo_as_checkpoint_is_not_opened_for_reading(tmp_path: Path) -> None:
    """``--resume`` with a FIFO where the checkpoint belongs: not a file, so no resume."""
    data = _checkpoints.dataset(tmp_path)
    os.mkfifo(tmp_path / "pipe.pt")
    with deadline(5.0), pytest.raises(CheckpointError, match="FIFO"):
        checkpoint_file.read_payload(tmp_path / "pipe.pt")
    assert data is not None


# ---------------------------------------------------------------- content fingerprints


def _bmp_folder(folder: Path, count: int = 8) -> ImageFolder:
    images = _checkpoints.distinct_images(count)
    folder.mkdir()
    for number, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"img{number:02d}.bmp")
    return ImageFolder(folder, _datasets.TIE_SPEC)


def _swap_same_size(path: Path, *, keep_mtime: bool) -> None:
    """Replace an image by a different one of the same byte size (uncompressed BMP)."""
    before = path.stat()
    size = before.st_size
    pixels = np.asarray(Image.open(path))
    Image.fromarray(255 - pixels).save(path)
    assert path.stat().st_size == size
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _ranked_path(index, data: ImageFolder) -> Path:
    return data.root / data.paths[next(index.state.entries()).image_id]


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new mtime", "mtime kept"])
def test_resume_refuses_a_same_size_swap_of_a_scanned_image(
    tmp_path: Path, keep_mtime: bool
) -> None:
    data = _bmp_folder(tmp_path / "photos")
    path = tmp_path / "scan.pt"
    options = {"k": 4, "batch_size": 2, "checkpoint_every": 1, "checkpoint": path}
    with pytest.raises(_checkpoints.Stopped):
        topk.scan(_nets.tie_net(), data, ["3"], progress=_checkpoints.stop_at(4), **options)
    state = TopKState.from_dict(checkpoint_file.read_payload(path)["state"])
    victim = data.root / data.paths[next(state.entries()).image_id]
    _swap_same_size(victim, keep_mtime=keep_mtime)
    expected = str(victim) if keep_mtime else "fingerprint"
    with pytest.raises(CheckpointError, match=expected):
        topk.scan(
            _nets.tie_net(),
            ImageFolder(data.root, data.preprocessing),
            ["3"],
            resume=True,
            **options,
        )


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new mtime", "mtime kept"])
def test_projection_refuses_an_image_changed_since_the_scan(
    tmp_path: Path, keep_mtime: bool
) -> None:
    data = _bmp_folder(tmp_path / "photos")
    index = topk.scan(_nets.tie_net(), data, ["3"], k=2, maps=2)
    victim = _ranked_path(index, data)
    _swap_same_size(victim, keep_mtime=keep_mtime)
    expected = f"{victim}.*changed since the scan" if keep_mtime else "differs"
    with pytest.raises(InputError, match=expected):
        topk.project(index, _nets.tie_net(), ImageFolder(data.root, data.preprocessing))


# ---------------------------------------------------------------- bad images in a scan


def test_bad_images_are_skipped_with_their_reason_and_the_scan_goes_on(tmp_path: Path) -> None:
    data = _bmp_folder(tmp_path / "photos", count=6)
    root = data.root
    Image.fromarray(np.full((1, 1, 3), 255, np.uint8)).save(root / "dot.png")
    os.mkfifo(root / "pipe.png")
    whole = (root / "img00.bmp").read_bytes()
    Image.open(root / "img00.bmp").save(root / "cut.png")
    (root / "cut.png").write_bytes((root / "cut.png").read_bytes()[:-16])
    with open(os.fsencode(root) + b"/caf\xe9.bmp", "wb") as handle:
        handle.write(whole[:-3] + bytes([1, 2, 3]))  # a readable BMP with a Latin-1 name
    data = ImageFolder(root, _datasets.TIE_SPEC)
    net = _nets.tie_net()
    with deadline(60.0):
        index = topk.scan(net, data, ["3"], k=3, batch_size=4)
    reasons = {Path(name).name: why for name, why in index.skipped}
    assert set(reasons) == {"dot.png", "pipe.png", "cut.png"}
    assert "forward pass failed" in reasons["dot.png"]
    assert "FIFO" in reasons["pipe.png"] and "truncated PNG" in reasons["cut.png"]
    readable = [i for i in range(len(data)) if Path(data.paths[i]).name not in reasons]
    assert index.state.images_seen == len(readable) == 7
    assert state_as_lists(index.state, "3") == brute_force(net, data, 3, 3, readable)


class _FailsOnBlack(nn.Module):
    """The tie network, but raising like a broken kernel on an all-black input."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _nets.tie_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).abs().sum(1) == 0).any()):
            raise RuntimeError("kernel failure")
        return self.net(x)


def test_a_group_whose_forward_fails_is_retried_image_by_image(tmp_path: Path) -> None:
    data = _checkpoints.dataset(tmp_path)  # image 7 is all black
    model = _FailsOnBlack()
    index = topk.scan(model, data, ["net.3"], k=4, batch_size=4)
    assert [i for i, _ in index.state.skipped] == [7]
    assert "kernel failure" in index.state.skipped[0][1]
    readable = [i for i in range(len(data)) if i != 7]
    assert state_as_lists(index.state, "net.3") == brute_force(model.net, data, 3, 4, readable)


# ---------------------------------------------------------------- stale temporary files


def test_stale_temporaries_of_our_naming_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    old = time.time() - 60

    def make(name: str, age: float = old) -> Path:
        path = tmp_path / name
        path.write_bytes(b"partial")
        os.utime(path, (age, age))
        return path

    stale = make(".scan.pt.0123456789abcdef.tmp")
    stale_png = make(".topk_3.png.fedcba9876543210.tmp")
    young = make(".scan.pt.1111111111111111.tmp", age=time.time() + 5)
    locked = make(".scan.pt.2222222222222222.tmp")
    foreign = [make(".scan.pt.xyz.tmp"), make("notes.tmp"), make("scan.pt.0123456789abcdef.tmp")]
    with open(locked, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a live writer holds its lock
        removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, stale_png])
    assert all(p.exists() for p in [young, locked, *foreign])
    assert not stale.exists() and not stale_png.exists()


def test_a_scan_clears_its_checkpoint_folder_of_stale_temporaries(tmp_path: Path) -> None:
    data = _checkpoints.dataset(tmp_path)
    stale = tmp_path / ".scan.pt.0123456789abcdef.tmp"
    stale.write_bytes(b"killed mid-write")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    topk.scan(_nets.tie_net(), data, ["0"], k=2, checkpoint=tmp_path / "scan.pt")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distinct.npz", "scan.pt"]
