"""scripts/train_default.py --save-epochs: the training's own checkpoint series (Fig. 4)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.models.default import TinyZFNet

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_default.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_default", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg")


def test_epoch_lists_are_parsed_and_checked() -> None:
    script = _script()
    assert script.epoch_list("5,1,2,5") == [1, 2, 5]
    for bad in ("0,1", "a", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            script.epoch_list(bad)
    assert script.checkpoint_path(Path("/x/default.pth"), 5) == Path("/x/default_epoch05.pth")


def test_save_epochs_keeps_the_state_after_each_listed_epoch(tmp_path, monkeypatch) -> None:
    script = _script()
    monkeypatch.setattr(script, "CACHE_DIR", tmp_path / "cache")  # never the real data's cache
    _folder(tmp_path / "data", per_class=64)  # 128 training images: one step per epoch
    out = tmp_path / "ckpt" / "net.pth"
    argv = ["train_default.py", "--epochs", "3", "--save-epochs", "1,3", "--data"]
    monkeypatch.setattr(sys, "argv", [*argv, str(tmp_path / "data"), "--out", str(out)])
    threads = torch.get_num_threads()
    try:
        script.main()
    finally:
        torch.set_num_threads(threads)  # the script pins one thread for the whole process
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "net.pth",
        "net_epoch01.pth",
        "net_epoch03.pth",
    ]
    first, last = (torch.load(out.parent / f"net_epoch0{e}.pth", weights_only=True) for e in (1, 3))
    final = torch.load(out, weights_only=True)
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert not all(torch.equal(first[k], last[k]) for k in first)  # training moved the weights
    TinyZFNet(num_classes=2).load_state_dict(first)


def test_save_epochs_past_the_last_epoch_is_refused(monkeypatch, capsys) -> None:
    script = _script()
    monkeypatch.setattr(sys, "argv", ["train_default.py", "--epochs", "2", "--save-epochs", "3"])
    with pytest.raises(SystemExit):
        script.main()
    assert "past --epochs 2" in capsys.readouterr().err
