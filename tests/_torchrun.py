"""Launching real ``torchrun`` jobs from tests: a CIFAR-10 subset, the launcher, its workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")
LAUNCH_TIMEOUT_S = 240
"""Bounds every job: a hang fails the test instead of stalling the suite."""
_GROUP_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def cifar_subset(shared_data: Path, folder: Path, per_class: int = 100) -> Path:
    """``per_class`` test images of each CIFAR-10 class, linked into ``folder``."""
    source = shared_data / "cifar10" / "test"
    if not source.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {source}")
    for klass in sorted(p.name for p in source.iterdir() if p.is_dir()):
        (folder / klass).mkdir(parents=True)
        for image in sorted((source / klass).iterdir())[:per_class]:
            (folder / klass / image.name).symlink_to(image)
    return folder


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without a process group of its own, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in _GROUP_VARIABLES}, **extra}


def launcher(nproc: int, *options: str, module: bool = False) -> list[str]:
    """``torchrun --standalone --nproc-per-node N`` (or ``python -m torch.distributed.run``)."""
    if module:
        head = [sys.executable, "-m", "torch.distributed.run"]
    else:
        if not TORCHRUN.is_file():
            pytest.skip(f"torchrun not found beside {sys.executable}")
        head = [str(TORCHRUN)]
    return [*head, "--standalone", f"--nproc-per-node={nproc}", *options]


def start(command: list[str], **extra: str) -> subprocess.Popen[str]:
    """Start a launcher in a session of its own, so :func:`stop` can end its workers too."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environment(**extra),
        start_new_session=True,
    )


def stop(job: subprocess.Popen[str]) -> None:
    """SIGKILL the launcher and every worker it started, if any still run."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a launcher to completion within :data:`LAUNCH_TIMEOUT_S` (then end it all)."""
    with start(command) as job:
        try:
            stdout, stderr = job.communicate(timeout=LAUNCH_TIMEOUT_S)
        finally:
            stop(job)
    return subprocess.CompletedProcess(command, job.returncode, stdout, stderr)


def worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the launcher's worker process with ``RANK`` = ``rank``, if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != launcher_pid:  # fields[1] is the parent pid
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None
