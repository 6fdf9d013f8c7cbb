"""One pass over a dataset that keeps, per feature map, the ``k`` strongest images.

Forward hooks on every requested layer reduce each output at once to per-image,
per-map maxima and their first row-major argmax, (B, M), and the running state folds them
in with one sort per layer and batch (see :mod:`deconvnet.instruments.topk.state`): no Python loop
over maps or images, no activation kept beyond its hook. The forward pass stops as soon
as every requested layer has produced its output (the model's first call of each layer
module counts). Loading runs in DataLoader worker processes, overlapping the forward.

**Bad images never stop a scan**: one that cannot be read (not a regular file, corrupt,
over the pixel limit) or on which the forward pass fails (e.g. a 1x1 image under a stride)
is recorded in ``skipped`` with its reason, and the scan goes on. A group whose forward
fails is retried one image at a time, so only the bad image is skipped.

**Resuming checks what it continues**: the checkpoint must pass
:mod:`~deconvnet.instruments.topk.checkpoint`'s checksum and field checks, the dataset's
listing fingerprint (names, sizes, modification times) must be unchanged, and every image
holding a top-k slot is read again and must have the bytes it was ranked with.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine import guard
from deconvnet.engine.capture import ForwardFailed, forward_until, output_tensor
from deconvnet.engine.hooks import holding_model_lock
from deconvnet.engine.layers import resolve_layer
from deconvnet.errors import CheckpointError, DeconvnetError, InputError, SelectionError
from deconvnet.inputs.datasets import Batch, ImageDataset, collate_by_size
from deconvnet.inputs.images import preprocess
from deconvnet.instruments.topk import checkpoint as checkpoints
from deconvnet.instruments.topk.state import (
    LayerTopK,
    MapStats,
    TopKState,
    content_sum,
    content_term,
    ranked_digests,
)
from deconvnet.models.card import batch_size_for
from deconvnet.storage.atomic import remove_stale_temporaries

Progress = Callable[[int, int | None], None]

DEFAULT_K = 9
DEFAULT_BATCH_SIZE = 32
DEFAULT_CHECKPOINT_EVERY = 50
"""Batches between checkpoints."""
CHECKPOINT_FORMAT = checkpoints.CHECKPOINT_FORMAT
VERIFY_RTOL = 1e-4
"""Relative tolerance (against max(1, |value|)) when a resume recomputes ranked values: one
image alone versus in a batch changes float32 rounding (measured: at most 9e-8 relative for
the default model's map maxima on CPU, batch of 16 versus one). A ranked value changed by
less than this cannot be told from rounding and is kept."""
MAX_COUNT_DIGITS = 12
"""``maps`` counts are ASCII digits (``isdigit()`` alone accepts ``١٢``), at most this many."""
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
            kind, colon, count = text.rpartition(":")
            if (kind == "random" or not colon) and count.isascii() and count.isdigit():
                if len(count) > MAX_COUNT_DIGITS:  # far more maps than any layer has
                    raise SelectionError(f"maps count {maps!r} is too large")
                return cls._counted("random" if colon else "first", int(count))
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
    fingerprint : the dataset's :meth:`~deconvnet.inputs.datasets.ImageDataset.fingerprint`
        (its listing); :attr:`content_fingerprint` digests the bytes of every image read.
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
    def content_fingerprint(self) -> str:
        """Hex digest of the bytes of every scanned image (order-independent, see the state)."""
        return f"{self.state.content:064x}"

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(image name, reason)`` for every image that could not be read."""
        return [(self.names.get(i, str(i)), message) for i, message in self.state.skipped]


@holding_model_lock  # its hooks would be seen by other threads using the model
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
    model : in eval mode (train-mode BatchNorm/Dropout is refused); left exactly as it
        was, on success or failure.
    layers : dotted module names, aliases (the model's card) or modules whose 4-D
        outputs (B, C, H, W) are ranked; each must be called once per forward pass.
    k : entries kept per map; each image counts once per map (its own maximum).
    maps : ``"all"``, ``N``, ``"random:N"`` or a channel list (see :class:`MapChoice`).
    batch_size, workers : DataLoader options (``workers=0`` loads in this process); a model
        that runs only batches of one (a ``.pt2`` exported with batch 1) gets batches of 1.
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
        Bad options, or layers the forward pass does not reach.
    CheckpointError
        (an ``InputError``) with ``resume``: a checkpoint that is corrupt, from another
        scan, inconsistent, or whose ranked images' bytes changed since.
    """
    if k < 1 or batch_size < 1 or workers < 0 or checkpoint_every < 1:
        raise InputError(
            f"need k >= 1, batch_size >= 1, workers >= 0, checkpoint_every >= 1; got k={k}, "
            f"batch_size={batch_size}, workers={workers}, checkpoint_every={checkpoint_every}"
        )
    choice = MapChoice.parse(maps)
    batch_size = batch_size_for(model, batch_size, "the top-k scan")
    named = [resolve_layer(model, layer) for layer in layers]
    guard.require_eval(model)
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
    if checkpoint is not None:
        remove_stale_temporaries(Path(checkpoint).parent)
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state, done = _load_checkpoint(Path(checkpoint), header)
        _verify_ranked_images(state, dataset, model, named, torch.device(device))
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
        skipped.extend(batch.failed)
        with guard.preserved(model):
            skipped.extend(recorder.run(model, batch, torch.device(device), dataset))
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
        self.checked_calls = False
        self.digests: dict[int, bytes] = dict(state.digests)
        self.content = state.content
        self.checked: set[str] = set()
        self.stats: dict[str, MapStats] = dict(state.stats)
        if set(self.stats) != set(self.tops):
            raise CheckpointError("the checkpoint's activation statistics do not cover its maps")

    def state(self, seen: int, skipped: list[tuple[int, str]]) -> TopKState:
        layers = {name: self.tops[name] for name, _ in self.named if name in self.tops}
        self.digests = ranked_digests(layers, self.digests)
        return TopKState(
            k=self.k,
            layers=layers,
            images_seen=seen,
            skipped=tuple(skipped),
            digests=dict(self.digests),
            content=self.content,
            stats={name: self.stats[name] for name in layers},
        )

    def run(
        self, model: nn.Module, batch: Batch, device: torch.device, dataset: Any
    ) -> list[tuple[int, str]]:
        """Fold in one batch; return ``(image id, reason)`` of images whose forward failed."""
        read = dict(batch.digests)
        self.content = content_sum(
            [self.content]
            + [content_term(i, read.get(i)) for ids, _ in batch.groups for i in ids.tolist()]
            + [content_term(i, read.get(i)) for i, _ in batch.failed]
        )
        self.digests.update(read)
        failed: list[tuple[int, str]] = []
        for image_ids, inputs in batch.groups:
            if not self.checked_calls:  # a reused module's output would be ambiguous
                for name, module in self.named:
                    guard.require_single_call(model, inputs[:1].to(device), module, name)
                self.checked_calls = True
            try:
                self._forward(model, image_ids, inputs.to(device), dataset)
            except ForwardFailed as error:
                if image_ids.numel() == 1:
                    failed.append((int(image_ids[0]), str(error)))
                    continue
                for slot in range(int(image_ids.numel())):  # find the image(s) at fault
                    try:
                        self._forward(
                            model,
                            image_ids[slot : slot + 1],
                            inputs[slot : slot + 1].to(device),
                            dataset,
                        )
                    except ForwardFailed as single:
                        failed.append((int(image_ids[slot]), str(single)))
        return failed

    def _forward(self, model: nn.Module, image_ids: Tensor, x: Tensor, dataset: Any) -> None:
        """One forward pass; the layers' maxima are folded in only if all of it succeeds."""
        with torch.no_grad():
            reduced = forward_until(model, x, self.named, keep=self._reduce)
        for name, (top, maxima, positions, means) in reduced.items():
            self.tops[name] = top.with_batch(image_ids, maxima, positions)
            stats = self.stats.get(name) or MapStats.empty(top.channels)
            self.stats[name] = stats.with_batch(maxima, means)

    def _reduce(self, name: str, output: Any) -> tuple[LayerTopK, Tensor, Tensor, Tensor]:
        """The layer's top-k so far and this output's per-image maxima, their positions and
        the maps' spatial means."""
        y = output_tensor(name, output)
        if y.dim() != _MAP_RANK:
            raise InputError(
                f"layer {name!r} must output feature maps (B, C, H, W), got {tuple(y.shape)}"
            )
        top = self.tops.get(name)
        if top is None:
            top = LayerTopK.empty(self.choice.resolve(y.shape[1], name, self.seed), self.k)
        if top.channels.numel() and int(top.channels[-1]) >= y.shape[1]:
            raise InputError(f"layer {name!r} changed its map count to {y.shape[1]}")
        if name not in self.checked:  # e.g. maps a resumed checkpoint says it tracks
            if not torch.equal(top.channels, self.choice.resolve(y.shape[1], name, self.seed)):
                raise CheckpointError(
                    f"the checkpoint tracks other maps of layer {name!r} than this scan's "
                    f"--maps {self.choice.describe()}"
                )
            self.checked.add(name)
        maps = y.detach()
        if top.channels.numel() != y.shape[1]:  # a subset: every map is tracked otherwise
            maps = maps.index_select(1, top.channels.to(y.device))
        maxima, flat_index = maps.flatten(2).max(dim=2)  # first maximum in row-major order
        width = maps.shape[3]
        positions = torch.stack([flat_index // width, flat_index % width], dim=-1)
        area = maps.shape[2] * maps.shape[3]
        means = maps.flatten(2).nansum(dim=2, dtype=torch.float64) / area
        return top, maxima, positions, means


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
    """Save the scan so far, atomically and signed (see :mod:`.checkpoint`)."""
    checkpoints.save(path, header, state, done)


def _load_checkpoint(path: Path, header: dict[str, Any]) -> tuple[TopKState, int]:
    """The validated state and ``done`` counter (see :mod:`.checkpoint`)."""
    return checkpoints.load(path, header)


def _verify_ranked_images(
    state: TopKState,
    dataset: ImageDataset,
    model: nn.Module,
    named: list[tuple[str, nn.Module]],
    device: torch.device,
) -> None:
    """Read every image holding a top-k slot again: its bytes must be those it was ranked
    with, and one forward pass of it must give each of its ranked values (within
    :data:`VERIFY_RTOL`, batching changes float rounding) as that map's maximum, reached at the
    ranked position. A checkpoint whose results do not describe this dataset and model is
    refused, not continued."""
    tracked = {name: top.channels for name, top in state.layers.items()}
    for image_id, recorded in state.digests.items():
        name = dataset.name(image_id)
        pixels = verified_image(dataset, image_id, recorded, "the checkpoint ranked it")
        x = preprocess(pixels, dataset.preprocessing, device)
        outputs = _tracked_outputs(model, named, x, tracked, name)
        for layer, top in state.layers.items():
            maps = outputs[layer]
            for rank, column in (top.image_ids == image_id).nonzero().tolist():
                value = float(top.values[rank, column])
                y, x_pos = top.positions[rank, column].tolist()
                where = f"map {int(top.channels[column])} of layer {layer!r} at ({y}, {x_pos})"
                if not (0 <= y < maps.shape[1] and 0 <= x_pos < maps.shape[2]):
                    raise CheckpointError(
                        f"the checkpoint ranks {name} in {where}, outside its maps "
                        f"{tuple(maps.shape[1:])}"
                    )
                found = maps[column].nan_to_num(nan=-torch.inf)
                there, most = float(found[y, x_pos]), float(found.max())
                if not (_close(there, value) and _close(most, value)):
                    raise CheckpointError(
                        f"the checkpoint ranks {name} in {where} with {value:.6g}; the model "
                        f"gives {there:.6g} there and {most:.6g} at most"
                    )


def _tracked_outputs(
    model: nn.Module,
    named: list[tuple[str, nn.Module]],
    x: Tensor,
    tracked: Mapping[str, Tensor],
    name: str,
) -> dict[str, Tensor]:
    """The ``tracked`` maps (M, H, W) of each layer for the one input ``x``, copied on CPU
    in the hook (a later in-place ReLU would change them)."""

    def picked(layer: str, output: Any) -> Tensor:
        y = output_tensor(layer, output)
        channels = tracked[layer]
        if y.dim() != _MAP_RANK or int(channels[-1]) >= y.shape[1]:
            raise CheckpointError(
                f"the checkpoint tracks map {int(channels[-1])} of layer {layer!r}, whose "
                f"output is {tuple(y.shape)}"
            )
        return y.detach()[0].index_select(0, channels.to(y.device)).to(device="cpu", copy=True)

    wanted = [(layer, module) for layer, module in named if layer in tracked]
    try:
        with torch.no_grad():
            return forward_until(model, x, wanted, keep=picked)
    except ForwardFailed as error:
        raise CheckpointError(
            f"the checkpoint ranks {name}, but the forward pass fails on it now: {error.reason}"
        ) from error


def _close(found: float, value: float) -> bool:
    return found == value or abs(found - value) <= VERIFY_RTOL * max(1.0, abs(value))


def verified_image(dataset: ImageDataset, image_id: int, recorded: bytes, why: str) -> np.ndarray:
    """Image ``image_id`` as :meth:`~ImageDataset.fitted_image` reads it, if its bytes still
    have digest ``recorded``; else :class:`CheckpointError` naming it."""
    try:
        pixels, digest = dataset.fitted_image(image_id)
    except (DeconvnetError, OSError) as error:
        raise CheckpointError(
            f"image {dataset.name(image_id)} cannot be read now ({why}): {error}"
        ) from error
    if digest != recorded:
        raise CheckpointError(
            f"image {dataset.name(image_id)} changed since the scan ({why}): its bytes differ "
            "from those scanned; scan again"
        )
    return pixels
