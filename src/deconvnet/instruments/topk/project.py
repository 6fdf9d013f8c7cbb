"""Project every top-k activation of a scan back to pixel space, many images at a time.

Entries are grouped by image id; the ranked images, in id order, are cut into runs of
:data:`IMAGES_PER_CALL` (:func:`projection_runs`), and the images of one run with the same
input shape and ranked at the same layers are projected together: each image is read and
preprocessed once, one forward pass over them serves every layer and every map that
ranked them, and each entry gets exactly one reverse pass, on its receptive-field window
(:meth:`~deconvnet.engine.engine.Deconvnet.project_units`): an image with three entries
costs three reverse passes, whatever the others in its run have. Float results depend on
the batch a value was computed in, so the batches depend only on the index: whatever share
of whole runs a process projects (one rank of a torchrun job), every value and pixel is the
one a single process computes, bit for bit. Each projection is cut to the receptive-field
box of its unit (:mod:`deconvnet.engine.receptive`), together with the same box of the
resized image the network saw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine.engine import DEFAULT_BATCH_SIZE, Deconvnet
from deconvnet.engine.layers import resolve_call
from deconvnet.engine.receptive import Box, ReceptiveField, receptive_fields
from deconvnet.engine.selection import UnitList
from deconvnet.errors import CheckpointError, InputError
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.inputs.images import preprocess, resized_rgb
from deconvnet.instruments.topk.scan import TopKIndex, verified_image
from deconvnet.instruments.topk.state import Entry
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import batch_size_for, model_device

Progress = Callable[[int, int | None], None]
Key = tuple[str, int, int]
"""``(layer, map, rank)`` of a projected entry."""
IMAGES_PER_CALL = 16
"""Images whose projections share one forward pass (and their reverse passes one batch):
16 rather than 8 took the default model's stage on 1,000 CIFAR images from 2.9 to 2.3 ms
per projection (a call's fixed cost, hooks and recording, shared by more images)."""


@dataclass(frozen=True, eq=False)
class ProjectedEntry:
    """One projected top-k activation.

    Attributes
    ----------
    entry : what the scan ranked (layer, map, rank, value, image, position).
    projection : Tensor (3, h, w) float — the projection inside ``crop_box`` (CPU), in RGB
        order whatever the network's channel order.
    patch : ndarray (h, w, 3) uint8 — the same box of the resized input image: a read-only
        view of the image the entries of that image share (a copy per entry held 1.4 GB of
        pixels for ResNet-50 ``layer3``'s 9,216 projections of 199 photos).
    crop_box : ``(top, left, bottom, right)`` of the unit's receptive field, clipped to the
        input; ``field_box`` is the unclipped box (it may reach into the padding).
    value : the activation as recomputed by the engine's forward pass.
    precision : the number type its reverse pass ran in (``"float32"`` also when a
        reduced-precision projection was redone in full precision).
    """

    entry: Entry
    projection: Tensor
    patch: np.ndarray
    crop_box: Box
    field_box: Box
    value: float
    precision: str = "float32"


@dataclass(frozen=True, eq=False)
class Projections(Mapping[Key, ProjectedEntry]):
    """Every projected entry by ``(layer, map, rank)``, and what computing them took.

    ``reverse_passes`` counts the reverse passes run: one per projection, nothing padded or
    repeated. ``forward_images`` counts the images run through a forward pass: each ranked
    image once, for all its layers and maps.
    """

    entries: dict[Key, ProjectedEntry]
    reverse_passes: int
    forward_images: int

    def __getitem__(self, key: Key) -> ProjectedEntry:
        return self.entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def project(
    index: TopKIndex,
    model: nn.Module,
    dataset: ImageDataset,
    *,
    rule: str | None = None,
    lrn: str | None = None,
    collisions: str | None = None,
    activations: str | None = None,
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    layers: Sequence[str] | None = None,
    image_ids: Collection[int] | None = None,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> Projections:
    """Project every entry of ``index`` separately; keys are ``(layer, map, rank)``.

    ``image_ids`` projects only the entries of these images (one rank's share of a
    distributed run: every image's seeds stay together, batched as in one process).

    Memory: the cropped projections of all entries (maps x k x receptive field area x 3
    floats per layer); choose fewer maps for large layers. ``max_work`` bounds how many
    entries one call projects (:func:`~deconvnet.instruments.work.check_work`; ``None`` for
    no ceiling).

    Raises
    ------
    InputError
        ``dataset`` is not the one that was scanned (its listing differs), or an image
        cannot be read now or its bytes differ from those the scan ranked
        (:class:`~deconvnet.errors.CheckpointError`).
    """
    if dataset.fingerprint() != index.fingerprint:
        raise InputError("the dataset differs from the one the top-k index was scanned from")
    wanted = set(index.layers if layers is None else layers)
    images = None if image_ids is None else set(image_ids)
    by_image: dict[int, list[Entry]] = defaultdict(list)
    for entry in index.state.entries():
        if entry.layer in wanted and (images is None or entry.image_id in images):
            by_image[entry.image_id].append(entry)
    total = check_work(
        sum(len(entries) for entries in by_image.values()),
        max_work,
        what="the projection stage",
        unit="projections",
    )
    if progress is not None:
        progress(0, total)
    runs = projection_runs(index, sorted(wanted))
    if device is None:
        device = model_device(model)
    per_call = batch_size_for(model, IMAGES_PER_CALL, "top-k projection")
    depth = _depths(model, wanted)
    fields: dict[tuple[int, ...], dict[str, ReceptiveField]] = {}
    results: dict[Key, ProjectedEntry] = {}
    passes = [0, 0]  # reverse, forward

    def run(group: list[_Image]) -> None:
        key = (1, *group[0].x.shape[1:])
        if key not in fields:
            fields[key] = receptive_fields(model, key, device)
        done = len(results)

        def report(count: int, _: int | None) -> None:
            if progress is not None:
                progress(done + count, total)

        found, reverse = _project_group(net, group, fields[key], report)
        if dataset.preprocessing.channel_order == "BGR":
            found = {k: _to_rgb(item) for k, item in found.items()}
        results.update(found)
        passes[0] += reverse
        passes[1] += len(group)

    with Deconvnet(
        model,
        rule,
        lrn=lrn,
        collisions=collisions,
        activations=activations,
        precision=precision,
        batch_size=batch_size,
    ) as net:
        for ids in runs:
            groups: dict[tuple[int, ...], list[_Image]] = defaultdict(list)
            for image_id in (i for i in ids if i in by_image):
                if image_id not in index.state.digests:
                    raise CheckpointError(
                        f"the top-k index has no content digest of {dataset.name(image_id)}"
                    )
                raw = verified_image(
                    dataset, image_id, index.state.digests[image_id], "before projecting"
                )
                x = preprocess(raw, dataset.preprocessing, device)
                shown = resized_rgb(raw, dataset.preprocessing)
                shown.setflags(write=False)  # its entries' patches are views of it
                image = _Image(x, shown, by_image[image_id])
                groups[tuple(x.shape)].append(image)
            for group in groups.values():
                for part in _by_deepest_layer(group, depth):
                    for start in range(0, len(part), per_call):
                        run(part[start : start + per_call])
    return Projections(results, reverse_passes=passes[0], forward_images=passes[1])


def projection_runs(index: TopKIndex, layers: Sequence[str] | None = None) -> list[list[int]]:
    """The ids of the images ranked at ``layers`` (default all), ascending, in runs of
    :data:`IMAGES_PER_CALL`: the batches of :func:`project`. A share of whole runs (one per
    rank, say) gets the same batches, hence the same bits, as one process projecting all."""
    wanted = set(index.layers if layers is None else layers)
    ranked = sorted({entry.image_id for entry in index.state.entries() if entry.layer in wanted})
    return [
        ranked[start : start + IMAGES_PER_CALL] for start in range(0, len(ranked), IMAGES_PER_CALL)
    ]


@dataclass(frozen=True)
class _Image:
    """One image of a projection group: its input, what the network saw, its entries."""

    x: Tensor
    shown: np.ndarray
    entries: list[Entry]


def _by_deepest_layer(group: list[_Image], depth: Mapping[str, int]) -> list[list[_Image]]:
    """The images of ``group`` split by the deepest layer that ranked them (``depth``: a
    layer's place in the forward pass): a forward pass runs to the deepest layer of its
    batch, so an image ranked only at an early layer is not carried to a later one, and
    images that stop at the same layer share one call whichever other layers ranked them
    (a call per set of layers cost the default model's stage a third of its time)."""
    parts: dict[int, list[_Image]] = {}
    for image in group:
        deepest = max(depth[entry.layer] for entry in image.entries)
        parts.setdefault(deepest, []).append(image)
    return [parts[deepest] for deepest in sorted(parts)]


def _depths(model: nn.Module, layers: Collection[str]) -> dict[str, int]:
    """Each layer's place in ``model``: its module's registration order, then its call
    (registration follows the forward in the models this stage meets; where it does not,
    only how the images are batched changes, never a projection)."""
    order = {module: n for n, module in enumerate(model.modules())}
    places = {}
    for layer in layers:
        _, module, call = resolve_call(model, layer)
        places[layer] = (order.get(module, len(order)), call or 1)
    return {layer: rank for rank, layer in enumerate(sorted(places, key=places.__getitem__))}


def _project_group(
    net: Deconvnet,
    group: list[_Image],
    fields: dict[str, ReceptiveField],
    progress: Progress,
) -> tuple[dict[Key, ProjectedEntry], int]:
    """One engine call for every entry of every layer in ``group``: one forward pass, one
    reverse pass per entry. Returns the projections and the reverse passes run."""
    per_layer: dict[str, list[tuple[int, Entry]]] = defaultdict(list)
    for row, image in enumerate(group):
        for entry in image.entries:
            per_layer[entry.layer].append((row, entry))
    for layer in per_layer:
        if layer not in fields:
            raise InputError(f"no receptive field for layer {layer!r} (its output is not 4-D)")
    units = {
        layer: UnitList(
            images=torch.tensor([row for row, _ in chosen], dtype=torch.long),
            channels=torch.tensor([entry.channel for _, entry in chosen], dtype=torch.long),
            positions=torch.tensor([entry.position for _, entry in chosen], dtype=torch.long),
        )
        for layer, chosen in sorted(per_layer.items())
    }
    found = net.project_units(torch.cat([image.x for image in group]), units, progress=progress)
    image_hw = (int(group[0].x.shape[2]), int(group[0].x.shape[3]))
    out = {}
    for layer, chosen in per_layer.items():
        field, projected = fields[layer], found[layer]
        for n, (row, entry) in enumerate(chosen):
            y, x = entry.position
            crop = field.box(y, x, image_hw)
            top, left, bottom, right = crop
            out[(layer, entry.channel, entry.rank)] = ProjectedEntry(
                entry=entry,
                projection=projected.crop(n, crop).detach().cpu().clone(),
                patch=group[row].shown[top:bottom, left:right],
                crop_box=crop,
                field_box=field.box(y, x),
                value=float(projected.values[n]),
                precision=projected.precision_at(n),
            )
    return out, sum(projected.reverse_passes for projected in found.values())


def _to_rgb(item: ProjectedEntry) -> ProjectedEntry:
    """Flip a BGR network's projection to RGB, like the patch beside it."""
    return replace(item, projection=item.projection.flip(0))
