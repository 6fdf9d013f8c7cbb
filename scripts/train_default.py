"""Train the embedded default network (``deconvnet.models.default``) on CIFAR-10.

Reads the JPEG image folders ``<data>/train/<class>/*.jpg`` and ``<data>/test/<class>/*.jpg``
(classes = sorted folder names), decodes them once with Pillow into a uint8 cache, trains
with random crop (pad 4) + horizontal flip, AdamW and a one-cycle schedule on one CPU
thread, and writes the state dict atomically to
``src/deconvnet/models/weights/default_cifar10.pth``.

``--save-epochs 1,2,5,10,15`` also keeps the state dict after each listed epoch as
``<out stem>_epochNN.pth`` beside ``--out``: the training's own checkpoint series, which
``deconvnet evolve`` turns into the paper's Fig. 4 (features forming during training).

Usage::

    .venv/bin/python scripts/train_default.py [--epochs 15] [--data ../shared/data/cifar10]
    .venv/bin/python scripts/train_default.py --save-epochs 1,2,5,10,15 --out /tmp/ckpt/default.pth
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from deconvnet.models.default import TinyZFNet

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10"
DEFAULT_OUT = REPO / "src" / "deconvnet" / "models" / "weights" / "default_cifar10.pth"
CACHE_DIR = Path(tempfile.gettempdir()) / "deconvnet_cifar10_cache"
SEED = 0
BATCH_SIZE = 128
MAX_LR = 3e-3
WEIGHT_DECAY = 5e-4
PAD = 4
IMAGE_SIZE = 32
LABEL_SMOOTHING = 0.1
WEIGHTS_FILE_MODE = 0o644


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``root/split/<class>/*.jpg`` into (N, 32, 32, 3) uint8 and (N,) int64 labels."""
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    CACHE_DIR.mkdir(exist_ok=True)
    cache = CACHE_DIR / f"{split}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["images"], data["labels"], classes
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / split / name).glob("*.jpg")):
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    arrays = np.stack(images), np.asarray(labels, dtype=np.int64)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=arrays[0], labels=arrays[1])
    os.replace(tmp, cache)
    return arrays[0], arrays[1], classes


def augment(padded: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops from (B, 3, 40, 40) and random horizontal flips."""
    batch = padded.shape[0]
    offs_y = torch.randint(0, 2 * PAD + 1, (batch,), generator=gen)
    offs_x = torch.randint(0, 2 * PAD + 1, (batch,), generator=gen)
    span = torch.arange(IMAGE_SIZE)
    rows = (offs_y[:, None] + span)[:, None, :, None]
    cols = (offs_x[:, None] + span)[:, None, None, :]
    out = padded[
        torch.arange(batch)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(batch, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> float:
    """Top-1 accuracy of ``model`` on uint8 NCHW images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), 500):
        x = (images[start : start + 500].float() / 255 - mean) / std
        correct += int((model(x).argmax(1) == labels[start : start + 500]).sum())
    model.train()
    return correct / len(images)


def save_atomic(state: dict[str, torch.Tensor], out: Path) -> None:
    """Write ``state`` next to ``out`` first, then rename: readers never see half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, WEIGHTS_FILE_MODE)  # mkstemp makes it owner-only
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def epoch_list(text: str) -> list[int]:
    """Parse ``--save-epochs 1,2,5``: positive epoch numbers, sorted, without repeats."""
    try:
        epochs = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a list of epoch numbers: {text!r}") from err
    if not epochs or epochs[0] < 1:
        raise argparse.ArgumentTypeError(f"epochs count from 1: {text!r}")
    return epochs


def checkpoint_path(out: Path, epoch: int) -> Path:
    """Where the state dict after ``epoch`` goes: beside ``out``, named after it."""
    return out.with_name(f"{out.stem}_epoch{epoch:02d}{out.suffix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--save-epochs",
        type=epoch_list,
        default=[],
        help="also keep the state dict after these epochs, e.g. 1,2,5,10,15",
    )
    args = parser.parse_args()
    if args.save_epochs and args.save_epochs[-1] > args.epochs:
        parser.error(f"--save-epochs {args.save_epochs[-1]} is past --epochs {args.epochs}")

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    t0 = time.time()
    train_x, train_y, classes = load_split(args.data, "train")
    test_x, test_y, test_classes = load_split(args.data, "test")
    if classes != test_classes:
        raise SystemExit(f"train/test classes differ: {classes} vs {test_classes}")
    floats = train_x.reshape(-1, 3).astype(np.float64) / 255
    mean_np, std_np = floats.mean(0), floats.std(0)
    print(
        f"decoded {len(train_x)} train / {len(test_x)} test in {time.time() - t0:.1f}s; "
        f"classes {classes}; mean {mean_np.tolist()} std {std_np.tolist()}",
        flush=True,
    )
    mean = torch.tensor(mean_np, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std_np, dtype=torch.float32)[:, None, None]

    train_t = torch.from_numpy(train_x).permute(0, 3, 1, 2).contiguous()
    padded = nn.functional.pad(train_t, (PAD, PAD, PAD, PAD))
    labels = torch.from_numpy(train_y)
    test_t = torch.from_numpy(test_x).permute(0, 3, 1, 2).contiguous()
    test_labels = torch.from_numpy(test_y)

    model = TinyZFNet(num_classes=len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = len(train_t) // BATCH_SIZE
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=MAX_LR, epochs=args.epochs, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)

    t_train = time.time()
    for epoch in range(args.epochs):
        t_ep = time.time()
        order = torch.randperm(len(train_t), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            x = (augment(padded[idx], gen).float() / 255 - mean) / std
            loss = loss_fn(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        acc = evaluate(model, test_t, test_labels, mean, std)
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {running / steps_per_epoch:.4f} "
            f"test_acc {acc:.4f} epoch_s {time.time() - t_ep:.1f}",
            flush=True,
        )
        save_atomic(model.state_dict(), args.out)
        if epoch + 1 in args.save_epochs:
            save_atomic(model.state_dict(), checkpoint_path(args.out, epoch + 1))
    train_s = time.time() - t_train
    acc = evaluate(model, test_t, test_labels, mean, std)
    record = {
        "test_accuracy": acc,
        "epochs": args.epochs,
        "train_seconds": round(train_s, 1),
        "threads": args.threads,
        "saved_epochs": args.save_epochs,
        "seed": SEED,
        "mean": mean_np.tolist(),
        "std": std_np.tolist(),
        "classes": classes,
        "params": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(record), flush=True)
    (CACHE_DIR / "train_record.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
