"""One pass over a dataset that keeps, per feature map, the ``k`` strongest images.

Forward hooks on every requested layer reduce each output at once to per-image,
per-map maxima and their first row-major argmax, (B, M), and the running state folds them
in with one sort per layer and batch (see :mod:`deconvnet.instruments.topk.state`): no Python loop
over maps or images, no activation kept beyond its hook. The forward pass stops as soon
as every requested layer has produced its output (the model's first call of each layer
module counts). Loading runs in DataLoader worker processes, overlapping the forward.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.engine.engine import resolve_layer
from deconvnet.engine.hooks import HandleList, LayerReached
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.datasets import Batch, ImageDataset, collate_by_size
from deconvnet.instruments.atomic import atomic_write
from deconvnet.instruments.topk.state import LayerTopK, MapStats, TopKState

Progress = Callable[[int, int | None], None]

DEFAULT_K = 9
DEFAULT_BATCH_SIZE = 32
DEFAULT_CHECKPOINT_EVERY = 50
"""Batches between checkpoints."""
CHECKPOINT_FORMAT = "deconvnet-topk-checkpoint/1"
_MAP_RANK = 4
_SEED_BYTES = 8


@dataclass(frozen=True)
class MapChoice:
    """Which maps of each layer are tracked: ``"all"``, ``N`` (the first N maps),
    ``"random:N"`` (N maps drawn per layer from ``seed`` and the layer name), or an explicit
    sequence of channel indices. ``N`` larger than a layer's map count means all its maps."""

    kind: str
    count: int = 0
    channels: tuple[int, ...] = ()

    @classmethod
    def parse(cls, maps: str | int | Sequence[int] | MapChoice) -> MapChoice:
        """Validate a ``maps`` option once."""
        if isinstance(maps, MapChoice):
            return maps
        if isinstance(maps, bool):
            raise SelectionError(f"maps must be 'all', N, 'random:N' or channel list, got {maps}")
        if isinstance(maps, int):
            return cls._counted("first", maps)
        if isinstance(maps, str):
            text = maps.strip().lower()
            if text == "all":
                return cls("all")
            if text.isdigit():
                return cls._counted("first", int(text))
            if text.startswith("random:") and text[len("random:") :].isdigit():
                return cls._counted("random", int(text[len("random:") :]))
            raise SelectionError(f"maps must be 'all', N or 'random:N', got {maps!r}")
        channels = tuple(int(c) for c in maps)
        if not channels or min(channels) < 0 or len(set(channels)) != len(channels):
            raise SelectionError(f"maps must list distinct channels >= 0, got {list(maps)}")
        return cls("list", channels=tuple(sorted(channels)))

    @classmethod
    def _counted(cls, kind: str, count: int) -> MapChoice:
        if count < 1:
            raise SelectionError(f"maps needs N >= 1, got {count}")
        return cls(kind, count=count)

    def describe(self) -> str:
        if self.kind == "list":
            return "list:" + ",".join(map(str, self.channels))
        return {"all": "all", "first": str(self.count)}.get(self.kind, f"random:{self.count}")

    def resolve(self, num_channels: int, layer: str, seed: int) -> Tensor:
        """The tracked channels of a layer with ``num_channels`` maps, ascending."""
        if self.kind == "all":
            return torch.arange(num_channels)
        if self.kind == "first":
            return torch.arange(min(self.count, num_channels))
        if self.kind == "list":
            if self.channels[-1] >= num_channels:
                raise SelectionError(
                    f"map {self.channels[-1]} out of range: layer {layer!r} has {num_channels}"
                )
            return torch.tensor(self.channels, dtype=torch.long)
        digest = hashlib.sha256(f"{seed}:{layer}".encode()).digest()[:_SEED_BYTES]
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little"))
        drawn = torch.randperm(num_channels, generator=generator)[: self.count]
        return torch.sort(drawn).values


@dataclass(frozen=True, eq=False)
class TopKIndex:
    """Result of :func:`scan`: the state plus what is needed to find the images again.

    Attributes
    ----------
    state : the top-k of every tracked map
        (see :class:`~deconvnet.instruments.topk.state.TopKState`).
    names : image id -> path (or ``file.npz[i]``) for every image in the top-k and every
        skipped one.
    num_images : images in the scanned set (read or skipped).
    fingerprint : the dataset's :meth:`~deconvnet.inputs.datasets.ImageDataset.fingerprint`.
    maps, seed : the map choice as given.
    """

    state: TopKState
    names: dict[int, str]
    num_images: int
    fingerprint: str
    maps: str
    seed: int

    @property
    def layers(self) -> list[str]:
        return list(self.state.layers)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(image name, reason)`` for every image that could not be read."""
        return [(self.names.get(i, str(i)), message) for i, message in self.state.skipped]


def scan(
    model: nn.Module,
    dataset: ImageDataset,
    layers: Sequence[str | nn.Module],
    *,
    k: int = DEFAULT_K,
    maps: str | int | Sequence[int] | MapChoice = "all",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    image_ids: Sequence[int] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    resume: bool = False,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> TopKIndex:
    """Keep the ``k`` strongest images of every selected map of ``layers`` over ``dataset``.

    Parameters
    ----------
    model : used as given (call ``model.eval()`` yourself); hooks are removed on return.
    layers : dotted module names (or modules) whose 4-D outputs (B, C, H, W) are ranked.
    k : entries kept per map; each image counts once per map (its own maximum).
    maps : ``"all"``, ``N``, ``"random:N"`` or a channel list (see :class:`MapChoice`).
    batch_size, workers : DataLoader options (``workers=0`` loads in this process).
    image_ids : scan only these images (a shard); ids stay global, so the states of
        disjoint shards merge with :meth:`TopKState.merge`.
    checkpoint : file that receives the state every ``checkpoint_every`` batches and at
        the end (atomically); with ``resume=True`` an existing one is continued and the
        result equals an uninterrupted scan.
    progress : ``(images done, total)`` after every batch (and once at the start).
    device : where inputs go; default: the model's parameters' device.

    Raises
    ------
    InputError
        Bad options, a checkpoint from another scan, or a forward pass that fails.
    """
    if k < 1 or batch_size < 1 or workers < 0 or checkpoint_every < 1:
        raise InputError(
            f"need k >= 1, batch_size >= 1, workers >= 0, checkpoint_every >= 1; got k={k}, "
            f"batch_size={batch_size}, workers={workers}, checkpoint_every={checkpoint_every}"
        )
    choice = MapChoice.parse(maps)
    named = [resolve_layer(model, layer) for layer in layers]
    if not named or len({name for name, _ in named}) != len(named):
        raise InputError(f"layers must name distinct layers, got {[n for n, _ in named]}")
    order = list(range(len(dataset))) if image_ids is None else [int(i) for i in image_ids]
    if any(not 0 <= i < len(dataset) for i in order) or len(set(order)) != len(order):
        raise InputError(f"image_ids must be distinct ids in 0..{len(dataset) - 1}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    header = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": dataset.fingerprint(),
        "model": model_fingerprint(model),
        "num_images": len(dataset),
        "image_ids": torch.tensor(order, dtype=torch.long),
        "layers": [name for name, _ in named],
        "k": k,
        "maps": choice.describe(),
        "seed": seed,
        "batch_size": batch_size,
    }
    state, done = TopKState(k=k, layers={}), 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state, done = _load_checkpoint(Path(checkpoint), header)
    recorder = _Recorder(named, choice, seed, k, state)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, order[done:]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_by_size,
    )
    skipped = list(state.skipped)
    if progress is not None:
        progress(done, len(order))
    batches = 0
    for batch in loader:
        recorder.run(model, batch, torch.device(device), dataset)
        skipped.extend(batch.failed)
        done += batch.size
        batches += 1
        state = recorder.state(done - len(skipped), skipped)
        if checkpoint is not None and (batches % checkpoint_every == 0 or done == len(order)):
            _save_checkpoint(Path(checkpoint), header, state, done)
        if progress is not None:
            progress(done, len(order))
    state = recorder.state(done - len(skipped), skipped)
    if checkpoint is not None and batches == 0 and not (resume and Path(checkpoint).is_file()):
        _save_checkpoint(Path(checkpoint), header, state, done)
    wanted = {entry.image_id for entry in state.entries()} | {i for i, _ in state.skipped}
    return TopKIndex(
        state=state,
        names={i: dataset.name(i) for i in sorted(wanted)},
        num_images=len(order),
        fingerprint=str(header["fingerprint"]),
        maps=choice.describe(),
        seed=seed,
    )


class _Recorder:
    """Hooks that reduce each requested layer's output to (B, M) maxima and fold them in."""

    def __init__(
        self,
        named: list[tuple[str, nn.Module]],
        choice: MapChoice,
        seed: int,
        k: int,
        state: TopKState,
    ) -> None:
        self.named = named
        self.choice = choice
        self.seed = seed
        self.k = k
        self.tops: dict[str, LayerTopK] = dict(state.layers)
        self.stats: dict[str, MapStats] = dict(state.stats)
        if set(self.stats) != set(self.tops):
            raise InputError(
                "the checkpoint has no activation statistics (an older deconvnet); "
                "rerun without resume"
            )

    def state(self, seen: int, skipped: list[tuple[int, str]]) -> TopKState:
        layers = {name: self.tops[name] for name, _ in self.named if name in self.tops}
        stats = {name: self.stats[name] for name in layers}
        return TopKState(
            k=self.k, layers=layers, images_seen=seen, skipped=tuple(skipped), stats=stats
        )

    def run(self, model: nn.Module, batch: Batch, device: torch.device, dataset: Any) -> None:
        for image_ids, inputs in batch.groups:
            self._forward(model, image_ids, inputs.to(device), dataset)

    def _forward(self, model: nn.Module, image_ids: Tensor, x: Tensor, dataset: Any) -> None:
        pending = {name for name, _ in self.named}

        def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
            def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                if name not in pending:
                    return
                self._fold(name, image_ids, output)
                pending.discard(name)
                if not pending:
                    raise LayerReached

            return hook

        with HandleList() as handles, torch.no_grad():
            for name, module in self.named:
                handles.append(module.register_forward_hook(hook_for(name)))
            try:
                model(x)
            except LayerReached:
                pass
            except RuntimeError as error:
                first = dataset.name(int(image_ids[0]))
                message = " ".join(str(error).split())[:200]
                raise InputError(
                    f"forward pass failed on input {tuple(x.shape)} (first image {first}): "
                    f"{message}"
                ) from error
        if pending:
            raise InputError(f"layers {sorted(pending)} were not reached by the forward pass")

    def _fold(self, name: str, image_ids: Tensor, output: Any) -> None:
        y = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(y, Tensor) or y.dim() != _MAP_RANK:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise InputError(f"layer {name!r} must output feature maps (B, C, H, W), got {shape}")
        if name not in self.tops:
            channels = self.choice.resolve(y.shape[1], name, self.seed)
            self.tops[name] = LayerTopK.empty(channels, self.k)
            self.stats[name] = MapStats.empty(channels)
        top = self.tops[name]
        if top.channels.numel() and int(top.channels[-1]) >= y.shape[1]:
            raise InputError(f"layer {name!r} changed its map count to {y.shape[1]}")
        maps = y.detach()
        if top.channels.numel() != y.shape[1]:  # a subset: every map is tracked otherwise
            maps = maps.index_select(1, top.channels.to(y.device))
        maxima, flat_index = maps.flatten(2).max(dim=2)  # first maximum in row-major order
        width = maps.shape[3]
        positions = torch.stack([flat_index // width, flat_index % width], dim=-1)
        self.tops[name] = top.with_batch(image_ids, maxima, positions)
        area = maps.shape[2] * maps.shape[3]
        means = maps.flatten(2).nansum(dim=2, dtype=torch.float64) / area
        self.stats[name] = self.stats[name].with_batch(maxima, means)


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of the model's state dict, so a checkpoint is
    never continued with other weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _save_checkpoint(path: Path, header: dict[str, Any], state: TopKState, done: int) -> None:
    """``torch.save`` the scan so far, atomically (see :func:`atomic_write`)."""
    payload = {**header, "done": done, "state": state.to_dict()}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def _load_checkpoint(path: Path, header: dict[str, Any]) -> tuple[TopKState, int]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds on a corrupt file
        message = " ".join(str(error).split())[:200]
        raise InputError(f"cannot read checkpoint {path}: {message}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a top-k scan checkpoint")
    for key, expected in header.items():
        found = payload.get(key)
        same = (
            isinstance(found, Tensor) and torch.equal(found, expected)
            if isinstance(expected, Tensor)
            else found == expected
        )
        if not same:
            shown = "the image list" if isinstance(expected, Tensor) else f"{found!r}"
            raise InputError(
                f"checkpoint {path} is from another scan: its {key} is {shown}, this scan's "
                f"differs; delete it or rerun without resume"
            )
    return TopKState.from_dict(payload["state"]), int(payload["done"])
