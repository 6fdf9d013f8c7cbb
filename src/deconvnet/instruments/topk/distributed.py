"""The top-k scan on several processes with ``torch.distributed``, as ``torchrun`` launches it.

**Shards.** Rank ``r`` scans a contiguous run of whole batches (:func:`shard`), so every
batch the model sees is a batch the single-process scan sees too: the maxima are the same
floats, not merely close ones. The per-rank states are exchanged with one all-gather and
merged in rank order on every rank; the merge is a pure function of the union of entries
(:meth:`~deconvnet.instruments.topk.state.TopKState.merge`), so the result equals the
single-process scan bit for bit whatever the world size.

**Projections** are divided by runs of images (:func:`rank_share`), round robin over the
projection stage's own batches in id order: each image is read and run forward once in the
whole job, in the batch one process would use, so every value and pixel is the
single-process one, bit for bit. Rank 0 gathers the
crops, because each layer's sheet needs all of its maps.

**Failures.** Every collective runs under the process group's timeout. Before each exchange
the ranks agree on success (:func:`together`): an error on one rank becomes a
:class:`RankError` naming that rank on every rank, instead of the others waiting for it.
States and crops travel as ``torch.save`` bytes in uint8 tensors and are read back with
``weights_only=True``, never unpickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.distributed_c10d import PrefixStore

from deconvnet.errors import InputError, one_line
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.inputs.labels import Labels
from deconvnet.instruments.topk.project import (
    ProjectedEntry,
    Projections,
    project,
    projection_runs,
)
from deconvnet.instruments.topk.scan import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_K,
    MapChoice,
    Progress,
    TopKIndex,
    scan,
)
from deconvnet.instruments.topk.state import Entry, LayerTopK, MapStats, TopKState

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for the other ranks (torch's own default for gloo): long
enough for rank 0 to draw the sheets while the others wait, short enough not to hang."""
LEADER = 0
_JOINED_KEY = "deconvnet-topk/joined"
_PROBE_S = 0.1
"""Seconds between tries to reach the job's store, and the bound on each try."""
_T = TypeVar("_T")


class RankError(InputError):
    """A rank of a distributed scan failed; raised on every rank, naming the failed one."""


@dataclass(frozen=True)
class Group:
    """This process's place in the job, as the launcher's environment gives it.

    (Whether the job was restarted is :attr:`Joined.attempt`, known once joined.)
    """

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Group | None:
        """The group ``torchrun`` describes, or None when the job has one process.

        Raises
        ------
        InputError
            ``WORLD_SIZE`` > 1 with a missing or inconsistent ``RANK``/``LOCAL_RANK``.
        """
        env = os.environ if environ is None else environ
        try:
            world_size = int(env.get("WORLD_SIZE", "1"))
            if world_size <= 1:
                return None
            rank = int(env["RANK"])
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
        except (KeyError, ValueError) as error:
            raise InputError(
                "WORLD_SIZE > 1 needs integer RANK and LOCAL_RANK (launch with torchrun)"
            ) from error
        if not 0 <= rank < world_size or local_rank < 0:
            raise InputError(
                f"RANK {rank} / LOCAL_RANK {local_rank} outside WORLD_SIZE {world_size}"
            )
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_leader(self) -> bool:
        return self.rank == LEADER

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def shard(num_images: int, batch_size: int, rank: int, world_size: int) -> range:
    """Image ids of ``rank``: a contiguous run of whole batches of ``batch_size``.

    Batches are dealt out as evenly as possible (the first ranks take one more when they do
    not divide); only the last rank's last batch can be short, as in one process.
    """
    if batch_size < 1 or not 0 <= rank < world_size:
        raise InputError(
            f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, "
            f"{world_size}"
        )
    batches = -(-num_images // batch_size)
    per_rank, extra = divmod(batches, world_size)
    first = rank * per_rank + min(rank, extra)
    count = per_rank + (1 if rank < extra else 0)
    return range(min(first * batch_size, num_images), min((first + count) * batch_size, num_images))


def rank_checkpoint(checkpoint: str | os.PathLike[str], group: Group) -> Path:
    """``topk_checkpoint.pt`` -> ``topk_checkpoint.rank1-of-2.pt``: one file per rank and
    world size, so a rerun with another world size never mistakes another shard's file."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.rank{group.rank}-of-{group.world_size}{path.suffix}")


def rank_device(group: Group, device: str) -> torch.device:
    """``cuda`` becomes ``LOCAL_RANK``'s GPU; ``cpu`` stays; one GPU named for all is refused."""
    target = torch.device(device)
    if target.type != "cuda":
        return target
    if target.index is not None:
        raise InputError(
            f"--device {device} names one GPU for every rank; give 'cuda' so that each rank "
            "takes the GPU of its LOCAL_RANK"
        )
    if group.local_rank >= torch.cuda.device_count():
        raise InputError(
            f"{group.describe()}: LOCAL_RANK {group.local_rank} has no GPU "
            f"({torch.cuda.device_count()} visible)"
        )
    return torch.device("cuda", group.local_rank)


@dataclass(frozen=True)
class Joined:
    """This rank inside the job's process group: its device, and which attempt this is
    (0 first; above 0 after torchrun restarted the job, which then resumes)."""

    device: torch.device
    attempt: int


@contextlib.contextmanager
def process_group(
    group: Group, device: str, timeout: timedelta = DEFAULT_TIMEOUT
) -> Iterator[Joined]:
    """Join the job's process group (gloo for CPU, nccl for CUDA), destroyed on exit.

    The store is torchrun's (``MASTER_ADDR``/``MASTER_PORT``), prefixed per attempt: torchrun
    keeps one store across restarts, and the keys of a killed attempt would otherwise send the
    next attempt's ranks to dead peers. The attempt is counted in the store itself, because
    ``TORCHELASTIC_RESTART_COUNT`` only rises on the node that failed.
    """
    target = rank_device(group, device)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if target.type == "cuda":
        torch.cuda.set_device(target)
    address, port = _store_address(group)
    hosts_store = group.is_leader and not _agent_hosts_store()
    if not hosts_store:
        _wait_for_store(group, address, port, timeout)
    try:
        store = dist.TCPStore(  # type: ignore[attr-defined]  # public, re-exported from torch._C
            address,
            port,
            group.world_size,
            is_master=hosts_store,
            timeout=timeout,
        )
        counted = (store.add(_JOINED_KEY, 1) - 1) // group.world_size
        dist.init_process_group(
            backend,
            store=PrefixStore(f"deconvnet-topk/attempt-{counted}", store),
            rank=group.rank,
            world_size=group.world_size,
            timeout=timeout,
        )
    except (KeyError, RuntimeError, ValueError) as error:
        raise InputError(
            f"{group.describe()}: cannot join the {backend} group: {one_line(error, 200)}"
        ) from error
    # a store of its own per attempt (no agent store) counts from 0 again: ask torchrun too
    attempt = max(counted, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0))
    try:
        yield Joined(device=target, attempt=attempt)
    finally:
        dist.destroy_process_group()


def _store_address(group: Group) -> tuple[str, int]:
    """``MASTER_ADDR`` and ``MASTER_PORT``, as torchrun sets them; one line if unset."""
    address, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    if not address or not port.isascii() or not port.isdigit() or not 0 < int(port) < 1 << 16:
        raise InputError(
            f"{group.describe()}: MASTER_ADDR and MASTER_PORT must name the job's store "
            "(launch with torchrun)"
        )
    return address, int(port)


def _wait_for_store(group: Group, address: str, port: int, timeout: timedelta) -> None:
    """Wait until the store accepts connections, within ``timeout``; else one line.

    torch's own client logs every failed try (dozens of lines of C++ frames) before it
    gives up; a plain probe first keeps a rank started without its job to one line."""
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        try:
            with socket.create_connection((address, port), timeout=_PROBE_S):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                reason = error.strerror or type(error).__name__
                raise InputError(
                    f"{group.describe()}: no store at {address}:{port} after "
                    f"{timeout.total_seconds():g} s ({reason}); is the job's rank 0 running? "
                    "(launch with torchrun)"
                ) from error
        time.sleep(_PROBE_S)


def _agent_hosts_store() -> bool:
    """torchrun's agent serves the store; a launcher without one leaves it to rank 0."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)


def together(group: Group, device: torch.device, work: Callable[[], _T]) -> _T:
    """Run ``work`` on this rank, then agree with every rank that all succeeded.

    Raises
    ------
    RankError
        On every rank when any rank's ``work`` raised: the lowest failed rank and its error.
    """
    try:
        result = work()
    except Exception as error:  # every rank must hear of it, or they would wait for us
        _agree(group, device, f"{type(error).__name__}: {one_line(str(error))}")
        raise  # _agree raised already; this keeps type checkers sure nothing returns
    _agree(group, device, "")
    return result


def _agree(group: Group, device: torch.device, failure: str) -> None:
    for rank, message in enumerate(_all_gather_bytes(failure.encode(), device, group)):
        if message:
            raise RankError(f"rank {rank} of {group.world_size} failed: {message.decode()}")


def scan_shards(
    model: nn.Module,
    dataset: ImageDataset,
    layers: Sequence[str | nn.Module],
    group: Group,
    device: torch.device,
    *,
    k: int = DEFAULT_K,
    maps: str | int | Sequence[int] | MapChoice = "all",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    resume: bool = False,
    progress: Progress | None = None,
    labels: Labels | None = None,
) -> TopKIndex:
    """:func:`~deconvnet.instruments.topk.scan.scan` of this rank's :func:`shard`, merged with
    every other rank's: every rank returns the index one process would have found.

    ``checkpoint`` is the single-process file name; each rank checkpoints to its own
    :func:`rank_checkpoint` and, with ``resume``, continues it.
    """
    ids = shard(len(dataset), batch_size, group.rank, group.world_size)

    def scan_mine() -> TopKIndex:
        return scan(
            model,
            dataset,
            layers,
            k=k,
            maps=maps,
            seed=seed,
            batch_size=batch_size,
            workers=workers,
            image_ids=ids,
            checkpoint=None if checkpoint is None else rank_checkpoint(checkpoint, group),
            checkpoint_every=checkpoint_every,
            resume=resume,
            progress=progress,
            device=device,
            labels=labels,
        )

    mine = together(group, device, scan_mine)
    parts = _all_gather_bytes(_dump(mine.state.to_dict()), device, group)
    state = merge_states([TopKState.from_dict(_load(part)) for part in parts])
    wanted = {entry.image_id for entry in state.entries()} | {i for i, _ in state.skipped}
    return TopKIndex(
        state=state,
        names={i: dataset.name(i) for i in sorted(wanted)},
        num_images=len(dataset),
        fingerprint=mine.fingerprint,
        maps=mine.maps,
        seed=seed,
        labels=labels,
    )


def merge_states(states: Sequence[TopKState]) -> TopKState:
    """Merge per-rank states in order; a rank that read no image (an empty or all-skipped
    shard) has no layers yet and counts as empty maps of the others' layers."""
    if not states:
        raise InputError("no states to merge")
    reference = next((state for state in states if state.layers), states[0])
    merged: TopKState | None = None
    for state in states:
        if not state.layers and reference.layers:
            state = dataclasses.replace(
                state,
                layers={
                    name: LayerTopK.empty(top.channels, top.k)
                    for name, top in reference.layers.items()
                },
                stats={
                    name: MapStats.empty(stats.channels, stats.classes)
                    for name, stats in reference.stats.items()
                },
            )
        merged = state if merged is None else merged.merge(state)
    assert merged is not None
    return merged


def project_shares(
    index: TopKIndex,
    model: nn.Module,
    dataset: ImageDataset,
    group: Group,
    device: torch.device,
    progress: Progress | None = None,
    **options: Any,
) -> Projections | None:
    """Project this rank's share of the ranked images; rank 0 returns every projection,
    the others None. ``options`` go to :func:`~deconvnet.instruments.topk.project.project`."""
    share = rank_share(index, group.rank, group.world_size)

    def project_mine() -> Projections:
        return project(
            index, model, dataset, image_ids=share, progress=progress, device=device, **options
        )

    mine = together(group, device, project_mine)
    payload = {
        "rows": [_packed(item) for item in mine.values()],
        "passes": [mine.reverse_passes, mine.forward_images],
    }
    parts = _gather_bytes(_dump(payload), device, group)
    if parts is None:
        return None
    found: dict[tuple[str, int, int], ProjectedEntry] = {}
    reverse = forward = 0
    for part in parts:
        loaded = _load(part)
        for row in loaded["rows"]:
            item = _unpacked(row)
            found[(item.entry.layer, item.entry.channel, item.entry.rank)] = item
        reverse, forward = reverse + loaded["passes"][0], forward + loaded["passes"][1]
    return Projections(found, reverse_passes=reverse, forward_images=forward)


def rank_share(index: TopKIndex, rank: int, world_size: int) -> list[int]:
    """The ranked images ``rank`` projects: whole runs of
    :func:`~deconvnet.instruments.topk.project.projection_runs`, dealt round robin, so each
    image is projected in the batch one process would use (the same bits, any world size)."""
    runs = projection_runs(index)
    return [image_id for run in runs[rank::world_size] for image_id in run]


def barrier(group: Group, device: torch.device) -> None:
    """Wait for every rank (under the group's timeout)."""
    together(group, device, lambda: None)


def _packed(item: ProjectedEntry) -> dict[str, Any]:
    entry = item.entry
    return {
        "layer": entry.layer,
        "channel": entry.channel,
        "rank": entry.rank,
        "value": entry.value,
        "image_id": entry.image_id,
        "position": list(entry.position),
        "projection": item.projection,
        "patch": torch.from_numpy(item.patch.copy()),  # the patch is a read-only view
        "crop_box": list(item.crop_box),
        "field_box": list(item.field_box),
        "projected_value": item.value,
        "precision": item.precision,
    }


def _unpacked(row: Mapping[str, Any]) -> ProjectedEntry:
    y, x = row["position"]
    top, left, bottom, right = row["crop_box"]
    f_top, f_left, f_bottom, f_right = row["field_box"]
    return ProjectedEntry(
        entry=Entry(
            row["layer"], row["channel"], row["rank"], row["value"], row["image_id"], (y, x)
        ),
        projection=row["projection"],
        patch=row["patch"].numpy(),
        crop_box=(top, left, bottom, right),
        field_box=(f_top, f_left, f_bottom, f_right),
        value=row["projected_value"],
        precision=str(row["precision"]),
    )


def _dump(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _load(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _transport(device: torch.device) -> torch.device:
    """nccl moves CUDA tensors only; gloo moves CPU tensors."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def _collective(group: Group) -> Iterator[None]:
    """A collective that times out or loses a peer raises one clear :class:`RankError`."""
    try:
        yield
    except RuntimeError as error:  # DistError and the backends' own RuntimeErrors
        raise RankError(
            f"{group.describe()}: lost contact with the other ranks (one died or the "
            f"collective timed out): {one_line(error, 300)}"
        ) from error


def _padded(data: bytes, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """This rank's bytes padded to the longest rank's, and every rank's length."""
    where = _transport(device)
    length = torch.tensor([len(data)], dtype=torch.long, device=where)
    lengths = [torch.zeros_like(length) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, length)
    sizes = [int(n.item()) for n in lengths]
    buffer = torch.zeros(max(sizes), dtype=torch.uint8, device=where)
    if data:
        buffer[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(where)
    return buffer, sizes


def _all_gather_bytes(data: bytes, device: torch.device, group: Group) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank."""
    with _collective(group):
        buffer, sizes = _padded(data, device)
        received = [torch.empty_like(buffer) for _ in sizes]
        dist.all_gather(received, buffer)
    return [bytes(part[:size].cpu().numpy()) for part, size in zip(received, sizes, strict=True)]


def _gather_bytes(data: bytes, device: torch.device, group: Group) -> list[bytes] | None:
    """Every rank's ``data`` in rank order on rank 0; None elsewhere."""
    with _collective(group):
        buffer, sizes = _padded(data, device)
        received = [torch.empty_like(buffer) for _ in sizes] if group.is_leader else None
        dist.gather(buffer, received, dst=LEADER)
    if received is None:
        return None
    return [bytes(part[:size].cpu().numpy()) for part, size in zip(received, sizes, strict=True)]
