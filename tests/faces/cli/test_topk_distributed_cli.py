"""``torchrun … -m deconvnet topk``: real torchrun jobs of 2 gloo ranks over 1,000 CIFAR-10
test images (embedded default model).

Oracle: the single-process ``deconvnet topk`` with the same options; its index, sheets and
tiles must come out byte for byte the same (the index holds every value, image and
position; the PNGs every displayed pixel).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from deconvnet.faces.cli import main
from tests import _torchrun

OPTIONS = [
    "--layers", "conv1,conv4", "--k", "4", "--maps", "3", "--batch-size", "32", "--workers", "0",
]  # fmt: skip
SLOW_SCRIPT = Path(__file__).with_name("_slow_topk.py")
READ_DELAY_S = 0.004
"""Per image in the killed-rank test: a rank's 500 images take 2 s, time to kill it."""
POLL_S = 0.02


@pytest.fixture(scope="module")
def cifar(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _torchrun.cifar_subset(shared_data, tmp_path_factory.mktemp("cifar") / "images")


@pytest.fixture(scope="module")
def reference(cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    assert main(["topk", str(cifar), *OPTIONS, "--out", str(out)]) == 0
    return out


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file but the manifest and the checkpoints, by relative name."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name != "manifest.json" and path.suffix != ".pt"
    }


def assert_same_files(found: Path, reference: Path, stdout: str) -> None:
    """The single-process files, rank 0 alone printing, a manifest listing both checkpoints."""
    expected = outputs(reference)
    got = outputs(found)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []
    assert stdout.count("scanned 1000 images (0 skipped)") == 1
    manifest = json.loads((found / "manifest.json").read_text())
    names = ["topk_checkpoint.rank0-of-2.pt", "topk_checkpoint.rank1-of-2.pt"]
    assert manifest["checkpoints"] == names and manifest["world_size"] == 2
    assert sorted(manifest["files"]) == sorted([*got, *names])


@pytest.mark.slow  # the killed-rank test below checks the same files after a restart
def test_torchrun_writes_the_single_process_files(
    cifar: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = _torchrun.run(
        [*_torchrun.launcher(2), "-m", "deconvnet", "topk", str(cifar), *OPTIONS, "--out", str(out)]
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_files(out, reference, job.stdout)


def test_a_failing_rank_ends_the_job_naming_it(cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "topk_checkpoint.rank1-of-2.pt").write_bytes(b"not a checkpoint")  # rank 1 fails
    argv = ["topk", str(cifar), *OPTIONS, "--out", str(out), "--resume", "--dist-timeout", "60"]
    start = time.monotonic()
    job = _torchrun.run([*_torchrun.launcher(2), "-m", "deconvnet", *argv])
    assert job.returncode != 0
    assert time.monotonic() - start < _torchrun.LAUNCH_TIMEOUT_S
    lines = job.stderr.splitlines()
    errors = [line for line in lines if line.startswith("deconvnet: error:")]
    # each rank says which rank failed and why; torchrun may stop one before it says it
    assert 1 <= len(errors) <= 2, job.stderr[-3000:]
    assert all(
        "rank 1 of 2 failed: CheckpointError: " in e and "is not a top-k scan checkpoint" in e
        for e in errors
    )
    assert not [line for line in lines if "deconvnet/" in line and "File " in line]  # no trace
    left = sorted(p.name for p in out.iterdir())  # only checkpoints stay, to be resumed
    assert set(left) <= {"topk_checkpoint.rank0-of-2.pt", "topk_checkpoint.rank1-of-2.pt"}


def test_a_killed_rank_restarts_resumes_and_ends_identical(
    cifar: Path, reference: Path, tmp_path: Path
) -> None:
    out, log = tmp_path / "out", tmp_path / "starts.log"
    command = [
        *_torchrun.launcher(2, "--max-restarts=1"), str(SLOW_SCRIPT), "topk", str(cifar),
        *OPTIONS, "--out", str(out), "--checkpoint-every", "1",
    ]  # fmt: skip
    extra = {"SLOW_TOPK_DELAY": str(READ_DELAY_S), "SLOW_TOPK_LOG": str(log)}
    with _torchrun.start(command, **extra) as job:
        try:
            deadline = time.monotonic() + _torchrun.LAUNCH_TIMEOUT_S
            checkpoint = out / "topk_checkpoint.rank1-of-2.pt"
            while not checkpoint.exists() and job.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(POLL_S)
            victim = _torchrun.worker_pid(job.pid, rank=1)
            assert victim is not None, "rank 1 is not running"
            os.kill(victim, signal.SIGKILL)
            stdout, stderr = job.communicate(timeout=_torchrun.LAUNCH_TIMEOUT_S)
        finally:
            _torchrun.stop(job)
    assert job.returncode == 0, stderr[-3000:]
    starts = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    rank1 = {attempt: done for rank, attempt, done in starts if rank == 1}
    assert rank1[0] == 0 and 0 < rank1[1] < 500  # restarted once, resumed mid-shard
    assert_same_files(out, reference, stdout)
