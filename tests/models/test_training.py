"""Training the default network (``deconvnet train-default``, issue 23 item 8): the state
after each epoch for Fig. 4, deterministic for a seed and thread count, every core by
default, and the process's RNG and thread count left as they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.faces.cli import main
from deconvnet.models.default import TinyZFNet
from deconvnet.models.training import all_cores, train_default


def _folder(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg")
    return root


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in state.items()}


def test_each_epoch_hands_over_its_state_and_the_run_is_seeded(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", per_class=64)  # 128 training images: one step per epoch
    states: list[dict[str, torch.Tensor]] = []
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    record = train_default(data, epochs=2, threads=1, on_epoch=lambda _, s: states.append(_copy(s)))
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), rng)
    assert [e.epoch for e in record.epochs] == [1, 2] and record.classes == ("a", "b")
    assert record.threads == 1 and record.train_images == 128 and record.test_images == 128
    assert not all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # it learned
    TinyZFNet(num_classes=2).load_state_dict(states[1])
    again: list[dict[str, torch.Tensor]] = []
    train_default(data, epochs=2, threads=1, on_epoch=lambda _, s: again.append(_copy(s)))
    assert all(torch.equal(states[1][k], again[1][k]) for k in states[1])


def test_the_command_keeps_the_chosen_epochs_on_all_cores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _folder(tmp_path / "data", per_class=64)
    out = tmp_path / "ckpt"
    argv = ["train-default", "--data", str(data), "--epochs", "3", "--save-epochs", "1,3"]
    assert main([*argv, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "default.pth", "default_epoch01.pth", "default_epoch03.pth", "manifest.json"
    ]  # fmt: skip
    final = torch.load(out / "default.pth", weights_only=True)
    last = torch.load(out / "default_epoch03.pth", weights_only=True)
    assert all(torch.equal(final[k], last[k]) for k in final)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["record"]["threads"] == all_cores()
    assert len(manifest["record"]["epochs"]) == 3
    assert "epoch 3/3: loss" in capsys.readouterr().err
    assert main(["train-default", "--help"]) == 0
    assert "all cores" in capsys.readouterr().out
    assert main([*argv[:-2], "--save-epochs", "4", "--out", str(tmp_path / "x")]) == 1
    assert "from 1 to --epochs 3" in capsys.readouterr().err


def test_a_folder_that_is_not_cifar_shaped_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        train_default(tmp_path / "missing")
    data = _folder(tmp_path / "data", per_class=2)
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(data / "train" / "a" / "big.png")
    with pytest.raises(InputError, match="not 32x32"):
        train_default(data)
