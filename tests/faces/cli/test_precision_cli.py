"""``--precision`` end to end: what each command records, the 8-bit files a reduced-precision
run writes, and a projection that falls back to float32 and says so.

Oracles: the same command in float32 (its PNG files, level by level) and the engine's
choice of type for this machine (:func:`deconvnet.engine.precision.reverse_dtype`).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.engine.precision import dtype_name, reverse_dtype
from deconvnet.faces.cli import main

RANDOM = ["--model", "default", "--weights", "random"]
CANCELLING = textwrap.dedent(
    """
    from tests import _nets

    def build():
        return _nets.cancelling()
    """
)


def _photo(path: Path, size: tuple[int, int] = (40, 48)) -> Path:
    array = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_project_defaults_to_auto_and_records_what_ran(tmp_path):
    out = tmp_path / "out"
    assert main(["project", str(_photo(tmp_path / "in.png")), *RANDOM, "--out", str(out)]) == 0
    manifest = _manifest(out)
    ran = dtype_name(reverse_dtype("auto", torch.float32, torch.device("cpu")))
    assert (manifest["precision"], manifest["precision_used"]) == ("auto", ran)
    records = manifest["images"][0]["projections"]
    assert [r["precision"] for r in records] == [ran] * 9
    assert not any("precision_fallback" in r for r in records)


def test_compat_runs_in_full_precision_unless_asked(tmp_path):
    """(The old demo's own selection is joint, which runs in full precision anyway: single
    units are selected here.)"""
    photo = _photo(tmp_path / "in.png", (227, 227))
    for given, expected in (([], "float32"), (["--precision", "bfloat16"], "bfloat16")):
        out = tmp_path / f"out{len(given)}"
        args = ["project", str(photo), "--model", "caffenet", "--weights", "random"]
        args += ["--compat", "caffe-deconvnet", "--select", "top:2"]
        assert main([*args, *given, "--out", str(out)]) == 0
        manifest = _manifest(out)
        assert manifest["precision"] == manifest["precision_used"] == expected


def test_bfloat16_files_are_display_exact_to_float32_s(tmp_path):
    """The PNGs written in bfloat16 and in float32: every tile within ±2 levels on ≥ 99 % of
    its pixels."""
    photo = _photo(tmp_path / "in.png", (64, 64))
    outs = {}
    for precision in ("bfloat16", "float32"):
        outs[precision] = tmp_path / precision
        args = ["project", str(photo), "--layer", "conv4", "--precision", precision]
        assert main([*args, "--out", str(outs[precision])]) == 0
    records = _manifest(outs["bfloat16"])["images"][0]["projections"]
    assert {r["precision"] for r in records} == {"bfloat16"}
    for record in records:
        low = np.asarray(Image.open(outs["bfloat16"] / record["file"]), dtype=int)
        full = np.asarray(Image.open(outs["float32"] / record["file"]), dtype=int)
        assert np.mean(np.abs(low - full).max(axis=2) <= 2) >= 0.99, record["file"]


def test_a_cancelling_unit_falls_back_to_float32_in_the_manifest(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[3]))  # tests._nets
    (tmp_path / "cancelling.py").write_text(CANCELLING)
    out = tmp_path / "out"
    args = ["project", str(_photo(tmp_path / "in.png", (16, 16))), "--model"]
    args += [f"{tmp_path / 'cancelling.py'}:build", "--input-size", "16", "--layer", "3"]
    assert main([*args, "--select", "top:1", "--precision", "bfloat16", "--out", str(out)]) == 0
    manifest = _manifest(out)
    assert manifest["precision_used"] == "bfloat16"
    (record,) = manifest["images"][0]["projections"]
    assert record["precision"] == "float32"
    assert record["precision_fallback"].startswith("redone in float32: in bfloat16")


def test_topk_records_the_precision_of_every_entry(tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8))
    out = tmp_path / "out"
    args = ["topk", str(data), *RANDOM, "--layers", "conv2", "--maps", "3", "--k", "2"]
    assert main([*args, "--workers", "0", "--precision", "bfloat16", "--out", str(out)]) == 0
    assert _manifest(out)["precision"] == "bfloat16"
    index = json.loads((out / "topk_index.json").read_text())
    assert index["metadata"]["precision"] == "bfloat16"
    assert {entry["precision"] for entry in index["entries"]} == {"bfloat16"}


@pytest.mark.parametrize("command", ["compare", "sanity"])
def test_compare_and_sanity_record_the_precision(tmp_path, command):
    out = tmp_path / command
    args = [command, str(_photo(tmp_path / "in.png")), *RANDOM, "--layer", "conv2"]
    assert main([*args, "--select", "map:3", "--precision", "float16", "--out", str(out)]) == 0
    manifest = _manifest(out)
    assert manifest["precision"] == "float16"
    if command == "compare":
        assert manifest["precisions"] == {rule: ["float16"] for rule in manifest["rules"]}
    else:  # per step of the cascade (the trained model first), per seed
        steps = len(manifest["rows"])
        assert steps > 1 and manifest["precisions"] == [["float16"]] * steps
