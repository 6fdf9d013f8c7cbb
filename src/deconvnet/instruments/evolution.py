"""Feature evolution during training, the paper's Fig. 4 (Zeiler & Fergus 2014, §4.1).

For each checkpoint of one architecture (in training order), the strongest activation of
each chosen map over a whole dataset is found (the top-k scan of
:mod:`~deconvnet.instruments.topk.scan` with ``k = 1``: every image counts with its own
maximum, ties go to the lower image id and then to the first position in row-major
order) and projected back to pixels with the deconvnet
(:mod:`~deconvnet.instruments.topk.project`). Reading the result along a map's row shows
the feature forming: which image excites it most, and what in that image, at each epoch.

Each checkpoint is applied to a deep copy of ``model`` (one extra copy of its parameters
at a time), so the caller's model is never touched.

>>> result = evolve(model, ["e01.pth", "e05.pth"], data, ["features.4"])  # doctest: +SKIP
>>> result.cell("features.4", 12, 1).entry.value   # map 12's top activation at e05
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from deconvnet.engine.layers import resolve_layer
from deconvnet.errors import InputError
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.instruments.topk.project import ProjectedEntry, project
from deconvnet.instruments.topk.scan import DEFAULT_BATCH_SIZE, MapChoice, scan
from deconvnet.models import apply_state_dict, read_state_dict

Progress = Callable[[int, int | None], None]
Checkpoint = Mapping[str, Tensor] | str | os.PathLike[str]
"""A state dict, or a ``.pth``/``.pt`` (read with ``weights_only=True``) or ``.safetensors``
file holding one."""

DEFAULT_MAPS = "random:8"


@dataclass(frozen=True, eq=False)
class EvolutionResult:
    """The top-1 projection of every chosen map at every checkpoint.

    Attributes
    ----------
    labels : one name per checkpoint, in the order given (the figure's columns).
    layers : the layers, as ``named_modules()`` names.
    channels : layer -> the chosen maps, ascending (the figure's rows; the same at every
        checkpoint, since the choice depends only on ``maps``, ``seed`` and the layer).
    cells : ``(layer, map, checkpoint index)`` -> the projected top-1 entry (its value,
        image, position, the projection cropped to the unit's receptive field and the same
        patch of the image); missing when no image could be read.
    names : image id -> path (or ``file.npz[i]``) of every image in a cell.
    num_images : images in the scanned set.
    maps, seed : the map choice as given.
    """

    labels: tuple[str, ...]
    layers: tuple[str, ...]
    channels: dict[str, tuple[int, ...]]
    cells: dict[tuple[str, int, int], ProjectedEntry]
    names: dict[int, str]
    num_images: int
    maps: str
    seed: int

    def cell(self, layer: str, channel: int, checkpoint: int) -> ProjectedEntry | None:
        """The projected top-1 entry of ``channel`` of ``layer`` at checkpoint ``checkpoint``."""
        return self.cells.get((layer, channel, checkpoint))


def evolve(
    model: nn.Module,
    checkpoints: Sequence[Checkpoint],
    dataset: ImageDataset,
    layers: Sequence[str | nn.Module],
    *,
    maps: str | int | Sequence[int] | MapChoice = DEFAULT_MAPS,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    rule: str | None = None,
    lrn: str | None = None,
    collisions: str | None = None,
    activations: str | None = None,
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    progress: Progress | None = None,
) -> EvolutionResult:
    """Project the strongest activation of each chosen map over ``dataset``, per checkpoint.

    Parameters
    ----------
    model : the architecture; each checkpoint is loaded into a deep copy of it, in the
        model's current mode (call ``.eval()`` yourself). ``model`` is never modified.
    checkpoints : state dicts (or files holding them) of ``model``'s architecture, in
        training order; every key and shape must match.
    layers : dotted names (or modules) of layers with feature maps (B, C, H, W).
    maps : which maps to follow (see :class:`~deconvnet.instruments.topk.scan.MapChoice`).
    labels : column names; default: the file stems, or ``checkpoint N``.
    rule, lrn, collisions, activations, precision : the reverse pass (see
        :class:`~deconvnet.engine.engine.Deconvnet`).
    progress : ``(images scanned over all checkpoints, total)``.

    Raises
    ------
    InputError
        No checkpoints, labels that do not match them, a checkpoint that does not fit the
        architecture (a ``WeightsError``), or a scan that fails.
    """
    if not checkpoints:
        raise InputError("evolve needs at least one checkpoint")
    names = (
        list(labels) if labels is not None else [_label(c, i) for i, c in enumerate(checkpoints)]
    )
    if len(names) != len(checkpoints):
        raise InputError(f"{len(names)} labels for {len(checkpoints)} checkpoints")
    choice = MapChoice.parse(maps)
    layer_names = tuple(resolve_layer(model, layer)[0] for layer in layers)
    total = len(dataset) * len(checkpoints)
    cells: dict[tuple[str, int, int], ProjectedEntry] = {}
    channels: dict[str, tuple[int, ...]] = {}
    image_names: dict[int, str] = {}
    for column, checkpoint in enumerate(checkpoints):
        snapshot = _with_weights(model, checkpoint, names[column])

        def scanned(done: int, _: int | None, offset: int = column * len(dataset)) -> None:
            if progress is not None:
                progress(offset + done, total)

        index = scan(
            snapshot,
            dataset,
            layer_names,
            k=1,
            maps=choice,
            seed=seed,
            batch_size=batch_size,
            workers=workers,
            progress=scanned,
        )
        projected = project(
            index,
            snapshot,
            dataset,
            rule=rule,
            lrn=lrn,
            collisions=collisions,
            activations=activations,
            precision=precision,
        )
        for (layer, channel, _rank), item in projected.items():
            cells[(layer, channel, column)] = item
        for layer, top in index.state.layers.items():
            channels[layer] = tuple(int(c) for c in top.channels.tolist())
        image_names.update(index.names)
        del snapshot
    return EvolutionResult(
        labels=tuple(names),
        layers=layer_names,
        channels=channels,
        cells=cells,
        names=image_names,
        num_images=len(dataset),
        maps=choice.describe(),
        seed=seed,
    )


def _with_weights(model: nn.Module, checkpoint: Checkpoint, label: str) -> nn.Module:
    """A deep copy of ``model`` holding ``checkpoint``'s tensors."""
    state = (
        read_state_dict(Path(checkpoint))
        if isinstance(checkpoint, str | os.PathLike)
        else checkpoint
    )
    snapshot = copy.deepcopy(model)
    apply_state_dict(snapshot, state, source=label)
    return snapshot


def _label(checkpoint: Checkpoint, index: int) -> str:
    if isinstance(checkpoint, str | os.PathLike):
        return Path(checkpoint).stem
    return f"checkpoint {index + 1}"
