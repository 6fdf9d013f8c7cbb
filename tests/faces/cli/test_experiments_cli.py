"""evolve / invariance / correspondence end to end through ``main([...])`` on the default net."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet import models
from deconvnet.faces.cli import main


def _photo(path: Path, seed: int = 0) -> Path:
    array = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _decodes(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


def test_evolve_writes_one_sheet_per_layer_and_the_cells(tmp_path: Path) -> None:
    state = models.load("default").state_dict()
    paths = []
    for epoch, factor in ((1, 0.5), (5, 1.0)):
        paths.append(tmp_path / f"default_epoch{epoch:02d}.pth")
        torch.save(
            {k: v * factor if v.is_floating_point() else v for k, v in state.items()}, paths[-1]
        )
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8))
    out = tmp_path / "out"
    args = ["evolve", *map(str, paths), "--data", str(data), "--layers", "conv1,conv4"]
    assert main([*args, "--maps", "0,5,9", "--workers", "0", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == ["default_epoch01", "default_epoch05"]
    assert manifest["precision"] == "auto"
    assert manifest["files"] == sorted(["evolution.json", *manifest["sheets"].values()])
    results = json.loads((out / "evolution.json").read_text())
    assert len(results["cells"]) == 2 * 3 * 2
    assert {c["map"] for c in results["cells"]} == {0, 5, 9}
    for name in manifest["sheets"].values():
        width, height = _decodes(out / name)
        assert width > 150 and height > 200


def test_evolve_takes_every_rule_of_the_table(tmp_path: Path) -> None:
    """Issue 22: evolve's --rule lacked ``none`` and it had no --lrn/--collisions; its
    choices now come from the rule table like the other commands', and the manifest records
    the reverse pass with its defaults resolved."""
    path = tmp_path / "default.pth"
    torch.save(models.load("default").state_dict(), path)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8))
    args = ["evolve", str(path), "--data", str(data), "--layers", "conv2", "--maps", "2"]
    for rule, lrn, collisions in (("none", "skip", "overwrite"), ("gradient", "gradient", "sum")):
        out = tmp_path / rule
        given = ["--rule", rule] + (["--collisions", collisions] if rule == "none" else [])
        assert main([*args, *given, "--workers", "0", "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        recorded = (manifest["rule"], manifest["lrn"], manifest["collisions"])
        assert recorded == (rule, lrn, collisions)


def test_evolve_refuses_a_checkpoint_of_another_architecture(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.zeros((2, 32, 32, 3), dtype=np.uint8))
    code = main(
        ["evolve", str(bad), "--data", str(data), "--layers", "conv1", "--out", str(tmp_path / "o")]
    )
    assert code == 1
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_invariance_writes_chart_csv_and_json(tmp_path: Path) -> None:
    photos = [_photo(tmp_path / f"p{i}.png", i) for i in range(2)]
    out = tmp_path / "inv"
    args = ["invariance", *map(str, photos), "--transform", "rotate", "--range", "0:90:45"]
    assert main([*args, "--layers", "conv1,conv4", "--labels", "3,top", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["amounts"] == [0, 45, 90] and manifest["input_size"] == [32, 32]
    assert manifest["files"] == sorted(
        ["invariance_rotate.png", "invariance_rotate.csv", "invariance_rotate.json"]
    )
    rows = list(csv.DictReader((out / "invariance_rotate.csv").open()))
    assert len(rows) == 6 and rows[0]["degrees"] == "0" and float(rows[0]["distance_conv4"]) == 0
    assert rows[0]["target"] == "3"
    results = json.loads((out / "invariance_rotate.json").read_text())
    assert results["images"][0]["target_name"] == "cat" and results["images"][0]["target_is_label"]
    width, height = _decodes(out / "invariance_rotate.png")
    assert width >= 900
    bare = tmp_path / "bare"
    assert main([*args, "--no-photos", "--out", str(bare)]) == 0
    assert _decodes(bare / "invariance_rotate.png")[1] < height  # no strip of pictures


@pytest.mark.parametrize("bad", ["1:0:1", "a,b", "0:10:0"])
def test_invariance_refuses_a_bad_range(tmp_path: Path, bad: str, capsys) -> None:
    photo = _photo(tmp_path / "p.png")
    args = ["invariance", str(photo), "--transform", "scale", f"--range={bad}"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "--range" in capsys.readouterr().err


def test_correspondence_prints_the_table_and_writes_its_files(tmp_path: Path, capsys) -> None:
    photos = [_photo(tmp_path / f"d{i}.png", i) for i in range(3)]
    parts = {
        p.name: {"eye": [5, 6, 12, 14], "nose": [20, 20, 28, 30], "object": [0, 0, 40, 48]}
        for p in photos
    }
    (tmp_path / "parts.json").write_text(json.dumps(parts))
    out = tmp_path / "cor"
    args = ["correspondence", *map(str, photos), "--parts", str(tmp_path / "parts.json")]
    assert main([*args, "--layers", "conv2,conv4", "--trials", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random (3 trials)" in printed and "conv4: mean ± std (Δ)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == 4 and manifest["input_size"] == [32, 32]
    rows = list(csv.DictReader((out / "correspondence.csv").open()))
    assert [(r["part"], r["layer"]) for r in rows] == [
        (part, layer) for part in ("eye", "nose", "random") for layer in ("conv2", "conv4")
    ]
    results = json.loads((out / "correspondence.json").read_text())
    # photo 40x48 -> 32x32: the eye box [5, 6, 12, 14] becomes [4, 4, 10, 9]
    assert results["images"][0]["part_boxes"]["eye"] == [4, 4, 10, 9]
    bare = tmp_path / "bare"
    assert main([*args, "--trials", "3", "--no-photos", "--out", str(bare)]) == 0

    def colours(path: Path) -> int:
        with Image.open(path) as image:
            return len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))

    assert colours(bare / "correspondence.png") < colours(out / "correspondence.png") / 10


def test_correspondence_needs_boxes_for_every_image(tmp_path: Path, capsys) -> None:
    photos = [_photo(tmp_path / f"d{i}.png", i) for i in range(2)]
    (tmp_path / "parts.json").write_text(json.dumps({"d0.png": {"eye": [1, 1, 4, 4]}}))
    args = ["correspondence", *map(str, photos), "--parts", str(tmp_path / "parts.json")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "no boxes for d1.png" in capsys.readouterr().err
    (tmp_path / "parts.json").write_text(json.dumps({"d0.png": {"eye": [1, 1, 0, 4]}}))
    assert main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "top < bottom" in capsys.readouterr().err


def test_invariance_takes_the_true_class_from_an_imagenet_file_name(
    tmp_path: Path, shared_data: Path
) -> None:
    """Issue 23, item 7: the orange photo is scored as an orange (its wnid n07747607 is in
    its name, ImageNet index 950), not as the top class; a name without a wnid keeps the
    top class. Oracle: Caffe's synset order (``synset_words.txt``)."""
    orange = shared_data / "imagenet-sample" / "n07747607_orange.JPEG"
    synsets = (shared_data / "caffe" / "synset_words.txt").read_text().splitlines()
    wnids = [line.split()[0] for line in synsets if line.strip()]
    renamed = tmp_path / "fruit.jpg"
    renamed.write_bytes(orange.read_bytes())
    out = tmp_path / "inv"
    argv = ["invariance", str(orange), str(renamed), "--model", "squeezenet1_0"]
    argv += ["--weights", "deep-compression", "--transform", "rotate", "--range", "0,90"]
    assert main([*argv, "--layers", "pool10", "--no-photos", "--out", str(out)]) == 0
    results = json.loads((out / "invariance_rotate.json").read_text())
    named, plain = results["images"]
    assert named["target"] == wnids.index("n07747607") == 950
    assert named["target_is_label"] and named["target_name"].startswith("orange")
    assert not plain["target_is_label"]


DOGS = (
    "n02085936_Maltese_dog.JPEG",
    "n02096294_Australian_terrier.JPEG",
    "n02097474_Tibetan_terrier.JPEG",
    "n02107908_Appenzeller.JPEG",
    "n02112137_chow.JPEG",
)


def test_correspondence_runs_on_the_bundled_dog_parts(tmp_path: Path, shared_data: Path) -> None:
    """Issue 23, item 8: the README's §4.3 example needs no file from the repository: the
    part boxes of the five ImageNet dogs ship with the package (``--parts imagenet-dogs``)."""
    from deconvnet.instruments.correspondence import bundled_parts

    shipped = bundled_parts("imagenet-dogs")
    assert shipped is not None and shipped.is_file()
    assert sorted(json.loads(shipped.read_text())) == sorted(DOGS)
    photos = [str(shared_data / "imagenet-sample" / name) for name in DOGS]
    argv = ["correspondence", *photos, "--parts", "imagenet-dogs", "--model", "squeezenet1_0"]
    argv += ["--weights", "deep-compression", "--layers", "fire5", "--trials", "2"]
    out = tmp_path / "corr"
    assert main([*argv, "--no-photos", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "correspondence.csv").open()))
    assert [row["part"] for row in rows] == ["left eye", "right eye", "nose", "random"]
    assert json.loads((out / "manifest.json").read_text())["parts_file"] == "imagenet-dogs"
