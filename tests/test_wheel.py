"""The README's main job after a plain ``pip install`` of the wheel: no extras, no network.

Builds the wheel, installs it with only the CPU torch pin into a fresh virtual environment,
and runs ``deconvnet project --out OUT`` from a folder outside the repository, with proxies
pointed at a closed port (any download fails at once) and an empty home (any cache write
shows). Slow (a torch install): run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.13.0"
BUILD_SECONDS = 300
VENV_SECONDS = 120
INSTALL_SECONDS = 600
RUN_SECONDS = 300
CLOSED_PORT = "http://127.0.0.1:9"
PHOTOS = ("deconvnet/inputs/photos/chelsea.png", "deconvnet/inputs/photos/coffee.png")
PACKAGED = (*PHOTOS, "deconvnet/instruments/parts/imagenet_dogs.json")
"""Files a plain install needs: the default photos, the bundled part boxes."""


def _run(argv: list[str], seconds: int, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds, **kwargs)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
    return done


README_MAIN_JOB = [
    "project", "--model", "squeezenet1_0", "--weights", "deep-compression", "--layer", "fire5"
]
"""The README's first command, after its install step."""
FONT_CACHE = r"\.(config|cache)/matplotlib/fontlist-v[0-9.]+\.json"


@pytest.mark.slow
def test_main_job_runs_from_a_plain_wheel_install(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", str(REPO), "-w", str(wheels)]
    _run(build, BUILD_SECONDS)
    (wheel,) = wheels.glob("deconvnet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert set(PACKAGED) <= set(archive.namelist())
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], VENV_SECONDS)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", TORCH_PIN, str(wheel)], INSTALL_SECONDS)
    probe = "import importlib.util as u; print(u.find_spec('skimage'))"
    assert _run([str(python), "-c", probe], RUN_SECONDS).stdout.strip() == "None"  # no extras

    elsewhere, home, out = tmp_path / "elsewhere", tmp_path / "home", tmp_path / "out"
    elsewhere.mkdir()
    home.mkdir()
    env = {
        "PATH": os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"]),
        "HOME": str(home),
        **{
            name: CLOSED_PORT for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
        },
    }
    command = [str(venv / "bin" / "deconvnet"), "project", "--out", str(out)]
    done = _run(command, RUN_SECONDS, cwd=elsewhere, env=env)
    manifest = json.loads((out / "manifest.json").read_text())
    assert Path(manifest["images"][0]["image"]).is_relative_to(venv)
    assert manifest["files"] and all((out / name).is_file() for name in manifest["files"])
    assert str(out / "manifest.json") in done.stdout
    readme = [*README_MAIN_JOB, "--out", str(tmp_path / "readme_out")]  # embedded ImageNet
    _run([str(venv / "bin" / "deconvnet"), *readme], RUN_SECONDS, cwd=elsewhere, env=env)
    manifest = json.loads((tmp_path / "readme_out" / "manifest.json").read_text())
    assert (manifest["model"], manifest["weights"]) == ("squeezenet1_0", "deep-compression")
    # Nothing downloaded: the only file written under HOME is matplotlib's font list, which
    # keeps in its cache folder (~/.cache/matplotlib, or MPLCONFIGDIR).
    written = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert all(re.fullmatch(FONT_CACHE, name) for name in written), written
