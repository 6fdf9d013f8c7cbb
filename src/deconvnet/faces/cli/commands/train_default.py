"""``deconvnet train-default``: train the embedded default network on CIFAR-10, keeping the
state dict after chosen epochs (the series ``deconvnet evolve`` turns into the paper's
Fig. 4)."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch
from torch import Tensor

from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._numbers import int_in
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.models.training import DEFAULT_EPOCHS, SEED, EpochResult, all_cores, train_default
from deconvnet.storage.atomic import atomic_write

WEIGHTS = "default.pth"
SUMMARY = "train the embedded default network on CIFAR-10 (checkpoints for Fig. 4)"
DESCRIPTION = """Train the default CIFAR-10 network from scratch (random crops and flips,
AdamW, one-cycle schedule) and keep its state dict after chosen epochs."""
MAX_EPOCHS = 1000
MAX_THREADS = 1024
EXAMPLES = """examples:
  deconvnet train-default --data ../shared/data/cifar10 --save-epochs 1,2,5,10,15 --out ckpt/
  deconvnet evolve ckpt/default_epoch01.pth ckpt/default_epoch05.pth ckpt/default_epoch15.pth \\
      --data ../shared/data/cifar10/test --layers conv1,conv4 --maps random:8 --out evolve/

DATA holds train/<class>/*.jpg and test/<class>/*.jpg, 32x32 RGB (the shared CIFAR-10
JPEGs). OUT gets default.pth (the state dict after the last epoch, rewritten after each),
default_epochNN.pth for each --save-epochs epoch and manifest.json with the test accuracy
of every epoch. Seeded and deterministic on CPU for a given --threads; with --threads 1 and
15 epochs it reproduces the embedded weights bit for bit.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "train-default", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument(
        "--data", type=Path, required=True, help="folder with train/<class>/ and test/<class>/"
    )
    parser.add_argument(
        "--epochs", type=int_in(1, MAX_EPOCHS), default=DEFAULT_EPOCHS, help="training epochs"
    )
    parser.add_argument(
        "--save-epochs",
        default=None,
        metavar="LIST",
        help="also keep the state dict after these epochs, e.g. 1,2,5,10,15 (default: none)",
    )
    parser.add_argument(
        "--threads",
        type=int_in(1, MAX_THREADS),
        default=None,
        help=f"CPU threads (default: all cores, {all_cores()} here)",
    )
    parser.add_argument("--seed", type=int_in(0, 2**31 - 1), default=SEED, help="random seed")
    add_output_arguments(parser)


def epoch_list(text: str | None, epochs: int) -> list[int]:
    """``--save-epochs 1,2,5``: epoch numbers from 1 to ``epochs``, sorted, no repeats."""
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    if not all(part.isascii() and part.isdigit() and len(part) < 5 for part in parts):
        raise InputError(f"--save-epochs takes epoch numbers such as 1,2,5, got {text!r}")
    chosen = sorted({int(part) for part in parts})
    if chosen and (chosen[0] < 1 or chosen[-1] > epochs):
        raise InputError(f"--save-epochs {text!r}: epochs run from 1 to --epochs {epochs}")
    return chosen


def checkpoint_name(epoch: int) -> str:
    """``default_epoch05.pth``: the state dict after ``epoch``."""
    return f"{Path(WEIGHTS).stem}_epoch{epoch:02d}{Path(WEIGHTS).suffix}"


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    save_epochs = epoch_list(args.save_epochs, args.epochs)

    def save(result: EpochResult, state: dict[str, Tensor]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        names = [WEIGHTS] + ([checkpoint_name(result.epoch)] if result.epoch in save_epochs else [])
        for name in names:
            atomic_write(args.out / name, lambda handle: handle.write(data))
        print(
            f"epoch {result.epoch}/{args.epochs}: loss {result.loss:.4f}, test accuracy "
            f"{100 * result.test_accuracy:.2f} %, {result.seconds:.1f} s",
            file=sys.stderr,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    with ProgressBar("train", unit="step") as bar:
        record = train_default(
            args.data,
            epochs=args.epochs,
            threads=args.threads,
            seed=args.seed,
            on_epoch=save,
            progress=bar,
        )
    folder.write_manifest(
        {
            "command": "train-default",
            "data": str(args.data),
            "weights": WEIGHTS,
            "checkpoints": {str(e): checkpoint_name(e) for e in save_epochs},
            "record": record,
        }
    )
    print(args.out / WEIGHTS)
    print(f"test accuracy {100 * record.test_accuracy:.2f} % after {args.epochs} epochs")
    return 0
