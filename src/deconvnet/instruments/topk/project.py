"""Project every top-k activation of a scan back to pixel space, many images at a time.

Entries are grouped by image id; the ranked images, in id order, are cut into runs of
:data:`IMAGES_PER_CALL` (:func:`projection_runs`) and the images of one run and one input
shape are projected together: each image is read and preprocessed once, and for each
layer the engine runs one forward pass over the group and one batched reverse pass that
seeds every (map, position) of every image separately (:class:`Units`), on receptive-field
windows. Float results depend on the batch a value was computed in, so the runs depend
only on the index: whatever share of whole runs a process projects (one rank of a
torchrun job), every value and pixel is the one a single process computes, bit for bit.
Each projection is cut to the receptive-field box of its unit
(:mod:`deconvnet.engine.receptive`), together with the same box of the resized image the
network saw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine.engine import DEFAULT_BATCH_SIZE, Deconvnet
from deconvnet.engine.receptive import Box, ReceptiveField, receptive_fields
from deconvnet.engine.selection import Seeds, Selection
from deconvnet.errors import CheckpointError, InputError, SelectionError
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.inputs.images import preprocess, resized_rgb
from deconvnet.instruments.topk.scan import TopKIndex, verified_image
from deconvnet.instruments.topk.state import Entry
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import batch_size_for

Progress = Callable[[int, int | None], None]
_MAP_RANK = 4
IMAGES_PER_CALL = 8
"""Images whose projections share one engine call (one forward, one batched reverse pass)."""


@dataclass(frozen=True, eq=False)
class Units(Selection):
    """Several single activations per image, each projected separately.

    ``channels`` (K,) and ``positions`` (K, 2) for a batch of one image, or (B, K) and
    (B, K, 2) for B images: seed ``k`` of image ``b`` keeps only
    ``y[b, channels[b, k], *positions[b, k]]``.
    """

    channels: Tensor
    positions: Tensor

    def resolve(self, y: Tensor) -> Seeds:
        channels = self.channels.to(device=y.device, dtype=torch.long)
        positions = self.positions.to(device=y.device, dtype=torch.long)
        if channels.dim() == 1:
            channels, positions = channels[None], positions[None]
        if y.dim() != _MAP_RANK or y.shape[0] != channels.shape[0]:
            raise SelectionError(
                f"Units for {channels.shape[0]} image(s) needs their maps (B, C, H, W), "
                f"got {tuple(y.shape)}"
            )
        limits = torch.tensor(y.shape[2:], device=y.device)
        if bool((channels < 0).any() | (channels >= y.shape[1]).any()) or bool(
            ((positions < 0) | (positions >= limits)).any()
        ):
            raise SelectionError(
                f"Units has a channel or position outside the layer's maps {tuple(y.shape[1:])}"
            )
        images = torch.arange(y.shape[0], device=y.device)[:, None].expand_as(channels)
        values = y.detach()[images, channels, positions[..., 0], positions[..., 1]]
        return Seeds(channels=channels, values=values, positions=positions, joint=None)

    def describe(self) -> str:
        return f"units:{int(self.channels.numel())}"


@dataclass(frozen=True, eq=False)
class ProjectedEntry:
    """One projected top-k activation.

    Attributes
    ----------
    entry : what the scan ranked (layer, map, rank, value, image, position).
    projection : Tensor (3, h, w) float — the projection inside ``crop_box`` (CPU), in RGB
        order whatever the network's channel order.
    patch : ndarray (h, w, 3) uint8 — the same box of the resized input image.
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
) -> dict[tuple[str, int, int], ProjectedEntry]:
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
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    per_call = batch_size_for(model, IMAGES_PER_CALL, "top-k projection")
    fields: dict[tuple[int, ...], dict[str, ReceptiveField]] = {}
    results: dict[tuple[str, int, int], ProjectedEntry] = {}
    done = 0

    def run(group: list[_Image]) -> None:
        nonlocal done
        key = (1, *group[0].x.shape[1:])
        if key not in fields:
            fields[key] = receptive_fields(model, key, device)
        for layer in sorted({entry.layer for image in group for entry in image.entries}):
            found = _project_group(net, group, layer, fields[key])
            if dataset.preprocessing.channel_order == "BGR":
                found = {k: _to_rgb(item) for k, item in found.items()}
            results.update(found)
            done += len(found)
            if progress is not None:
                progress(done, total)

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
                image = _Image(x, resized_rgb(raw, dataset.preprocessing), by_image[image_id])
                groups[tuple(x.shape)].append(image)
            for group in groups.values():
                for start in range(0, len(group), per_call):
                    run(group[start : start + per_call])
    return results


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


def _project_group(
    net: Deconvnet,
    group: list[_Image],
    layer: str,
    fields: dict[str, ReceptiveField],
) -> dict[tuple[str, int, int], ProjectedEntry]:
    """One engine call for every entry of ``layer`` in ``group`` (one seed per entry; images
    with fewer entries repeat their first seed, and the repeats are dropped)."""
    if layer not in fields:
        raise InputError(f"no receptive field for layer {layer!r} (its output is not 4-D)")
    images = [image for image in group if any(e.layer == layer for e in image.entries)]
    per_image = [[e for e in image.entries if e.layer == layer] for image in images]
    count = max(len(entries) for entries in per_image)
    padded = [entries + [entries[0]] * (count - len(entries)) for entries in per_image]
    select = Units(
        channels=torch.tensor([[e.channel for e in row] for row in padded], dtype=torch.long),
        positions=torch.tensor([[e.position for e in row] for row in padded], dtype=torch.long),
    )
    result = net.project(torch.cat([image.x for image in images]), layer, select)
    field = fields[layer]
    x0 = images[0].x
    image_hw = (int(x0.shape[2]), int(x0.shape[3]))
    out = {}
    for row, (image, entries) in enumerate(zip(images, per_image, strict=True)):
        for slot, entry in enumerate(entries):
            y, x_pos = entry.position
            crop = field.box(y, x_pos, image_hw)
            top, left, bottom, right = crop
            projection = result.images[row, slot, :, top:bottom, left:right]
            out[(layer, entry.channel, entry.rank)] = ProjectedEntry(
                entry=entry,
                projection=projection.detach().cpu().clone(),
                patch=image.shown[top:bottom, left:right].copy(),
                crop_box=crop,
                field_box=field.box(y, x_pos),
                value=float(result.values[row, slot]),
                precision=result.precision_at(row, slot),
            )
    return out


def _to_rgb(item: ProjectedEntry) -> ProjectedEntry:
    """Flip a BGR network's projection to RGB, like the patch beside it."""
    return replace(item, projection=item.projection.flip(0))
