"""Training the embedded default network (:class:`~deconvnet.models.default.TinyZFNet`) on
CIFAR-10, as ``deconvnet train-default`` runs it and as its weights were made.

Reads the image folders ``<data>/train/<class>/*`` and ``<data>/test/<class>/*`` (classes =
sorted folder names, 32x32 RGB), trains with random crops (pad 4) and horizontal flips,
AdamW and a one-cycle schedule, and hands the state dict to ``on_epoch`` after every epoch
(the caller writes it: the paper's Fig. 4 wants the series). Seeded: the same data, seed
and thread count give the same weights bit for bit on CPU; one thread with seed 0 and 15
epochs gave the embedded ``default_cifar10.pth``. The global RNG and torch's thread count
are restored afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.errors import InputError
from deconvnet.inputs.datasets import ImageFolder
from deconvnet.inputs.preprocessing import PRESETS
from deconvnet.models.default import TinyZFNet

SEED = 0
BATCH_SIZE = 128
MAX_LR = 3e-3
WEIGHT_DECAY = 5e-4
PAD = 4
IMAGE_SIZE = 32
LABEL_SMOOTHING = 0.1
EVAL_BATCH = 500
DEFAULT_EPOCHS = 15
MAX_LEVEL = 255.0

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class EpochResult:
    """One epoch: its number (from 1), mean training loss, test accuracy and seconds."""

    epoch: int
    loss: float
    test_accuracy: float
    seconds: float


@dataclass(frozen=True)
class TrainingRecord:
    """What a training run did: the data's classes and pixel statistics, each epoch, the
    final test accuracy."""

    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_images: int
    test_images: int
    threads: int
    seed: int
    params: int
    train_seconds: float
    test_accuracy: float
    epochs: list[EpochResult] = field(default_factory=list)


def all_cores() -> int:
    """The CPUs this process may run on (the default thread count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``root/split/<class>/*`` as ``(N, 32, 32, 3)`` uint8 images, ``(N,)`` int64 labels
    and the class names (sorted folder names), in sorted file order.

    Raises
    ------
    InputError
        The folder is missing, an image is not 32x32 RGB, or files lie outside a class folder.
    """
    folder = root / split
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give --data the folder holding train/, test/")
    images = ImageFolder(folder, PRESETS["unit"])  # read as stored, never preprocessed
    classes = tuple(sorted({Path(relative).parts[0] for relative in images.paths}))
    pixels, labels = [], []
    for image_id, relative in enumerate(images.paths):
        parts = Path(relative).parts
        if len(parts) != 2:
            raise InputError(f"{folder / relative}: images must lie in {folder}/<class>/")
        image = images.raw_image(image_id)
        if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise InputError(f"{folder / relative} is {image.shape}, not 32x32 RGB")
        pixels.append(image)
        labels.append(classes.index(parts[0]))
    return np.stack(pixels), np.asarray(labels, dtype=np.int64), classes


def augment(padded: Tensor, generator: torch.Generator) -> Tensor:
    """Random 32x32 crops from ``(B, 3, 40, 40)`` and random horizontal flips."""
    batch = padded.shape[0]
    offset_y = torch.randint(0, 2 * PAD + 1, (batch,), generator=generator)
    offset_x = torch.randint(0, 2 * PAD + 1, (batch,), generator=generator)
    span = torch.arange(IMAGE_SIZE)
    rows = (offset_y[:, None] + span)[:, None, :, None]
    cols = (offset_x[:, None] + span)[:, None, None, :]
    out = padded[
        torch.arange(batch)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(batch, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, mean: Tensor, std: Tensor) -> float:
    """Top-1 accuracy of ``model`` on uint8 NCHW images (left in train mode afterwards)."""
    model.eval()
    correct = 0
    for start in range(0, len(images), EVAL_BATCH):
        x = (images[start : start + EVAL_BATCH].float() / MAX_LEVEL - mean) / std
        correct += int((model(x).argmax(1) == labels[start : start + EVAL_BATCH]).sum())
    model.train()
    return correct / len(images)


def train_default(
    data: Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    threads: int | None = None,
    seed: int = SEED,
    on_epoch: Callable[[EpochResult, dict[str, Tensor]], None] | None = None,
    progress: Progress | None = None,
) -> TrainingRecord:
    """Train a fresh :class:`TinyZFNet` on ``data`` (see the module's docstring).

    ``threads`` defaults to :func:`all_cores`; ``on_epoch(result, state_dict)`` is called
    after each epoch with the live state (save or copy it then: training goes on);
    ``progress(step, total)`` after each training step.
    """
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    train_x, train_y, classes = load_split(data, "train")
    test_x, test_y, test_classes = load_split(data, "test")
    if classes != test_classes:
        raise InputError(f"train and test classes differ: {classes} vs {test_classes}")
    floats = train_x.reshape(-1, 3).astype(np.float64) / MAX_LEVEL
    mean_np, std_np = floats.mean(0), floats.std(0)
    mean = torch.tensor(mean_np, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std_np, dtype=torch.float32)[:, None, None]
    train = torch.from_numpy(train_x).permute(0, 3, 1, 2).contiguous()
    padded = nn.functional.pad(train, (PAD, PAD, PAD, PAD))
    labels = torch.from_numpy(train_y)
    test = torch.from_numpy(test_x).permute(0, 3, 1, 2).contiguous()
    test_labels = torch.from_numpy(test_y)
    steps = len(train) // BATCH_SIZE
    if steps < 1:
        raise InputError(f"{data}/train holds {len(train)} images; a step needs {BATCH_SIZE}")
    count = threads or all_cores()
    before = torch.get_num_threads()
    results: list[EpochResult] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(count)
        try:
            generator = torch.Generator().manual_seed(seed)
            model = TinyZFNet(num_classes=len(classes))
            optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=MAX_LR, epochs=epochs, steps_per_epoch=steps
            )
            loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
            started = time.monotonic()
            for epoch in range(1, epochs + 1):
                epoch_start = time.monotonic()
                order = torch.randperm(len(train), generator=generator)
                running = 0.0
                for step in range(steps):
                    chosen = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
                    x = (augment(padded[chosen], generator).float() / MAX_LEVEL - mean) / std
                    loss = loss_fn(model(x), labels[chosen])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    running += loss.item()
                    if progress is not None:
                        progress((epoch - 1) * steps + step + 1, epochs * steps)
                accuracy = evaluate(model, test, test_labels, mean, std)
                seconds = time.monotonic() - epoch_start
                result = EpochResult(epoch, running / steps, accuracy, seconds)
                results.append(result)
                if on_epoch is not None:
                    on_epoch(result, model.state_dict())
            train_seconds = time.monotonic() - started
        finally:
            torch.set_num_threads(before)
    return TrainingRecord(
        classes=classes,
        mean=_triple(mean_np),
        std=_triple(std_np),
        train_images=len(train),
        test_images=len(test),
        threads=count,
        seed=seed,
        params=sum(p.numel() for p in model.parameters()),
        train_seconds=train_seconds,
        test_accuracy=results[-1].test_accuracy,
        epochs=results,
    )


def _triple(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in values)
    return first, second, third
