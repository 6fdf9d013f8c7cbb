"""``--out`` hygiene (deconvnet.faces.cli._output): refusal, ``--overwrite``, ``--resume``,
tampered manifests, failed runs, file modes, and the manifest's ``files`` list.

Oracle for ``files``: the folder itself, walked here with ``os.walk`` after the run: the
manifest must list exactly the files found there (the manifest excluded), no more, no less.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.faces.cli import _output as output
from deconvnet.faces.cli import main
from deconvnet.faces.cli.commands import topk as topk_command

RANDOM = ["--model", "default", "--weights", "random"]


def _photo(path: Path, seed: int = 0) -> Path:
    array = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _found(folder: Path) -> list[str]:
    """Every file under ``folder`` as a ``/``-separated relative name, sorted."""
    return sorted(
        (Path(root) / name).relative_to(folder).as_posix()
        for root, _, names in os.walk(folder)
        for name in names
    )


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _listed_exactly(folder: Path) -> list[str]:
    """Assert the manifest lists exactly the folder's other files; return them."""
    files = _manifest(folder)["files"]
    assert files == [name for name in _found(folder) if name != "manifest.json"]
    return files


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in _found(folder)}


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return _photo(tmp_path / "in.png")


def _project(photo: Path, out: Path, *extra: str) -> int:
    argv = ["project", str(photo), *RANDOM, "--layer", "conv2", *extra, "--out", str(out)]
    return main(argv)


# ------------------------------------------------------------------ project, end to end


def test_a_new_folder_gets_the_files_and_a_manifest_listing_exactly_them(
    photo: Path, tmp_path: Path, set_umask: Callable[[int], int]
) -> None:
    set_umask(0o022)
    out = tmp_path / "new" / "out"
    assert _project(photo, out, "--select", "top:2") == 0
    files = _listed_exactly(out)
    assert len(files) == 1 + 2  # the sheet, and per projection its picture
    assert all(stat.S_IMODE((out / n).stat().st_mode) == 0o644 for n in _found(out))


def test_files_are_group_readable_only_under_umask_0027(
    photo: Path, tmp_path: Path, set_umask: Callable[[int], int]
) -> None:
    set_umask(0o027)
    out = tmp_path / "out"
    assert _project(photo, out, "--select", "map:1") == 0
    assert {stat.S_IMODE((out / n).stat().st_mode) for n in _found(out)} == {0o640}


def test_an_empty_existing_folder_is_used(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert _project(photo, out, "--select", "map:1") == 0
    assert len(_listed_exactly(out)) == 2  # the sheet and the one picture


def test_a_second_run_into_the_same_folder_is_refused_and_touches_nothing(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _project(photo, out, "--select", "top:2") == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert _project(photo, out, "--select", "map:1") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deconvnet: error:")
    assert str(out) in err and "--overwrite" in err and "not empty" in err
    assert _snapshot(out) == before


def test_overwrite_removes_exactly_the_listed_files_and_keeps_the_rest(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _project(photo, out, "--select", "top:3") == 0
    old = set(_manifest(out)["files"])
    (out / "notes.txt").write_text("mine")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not ours")
    capsys.readouterr()
    assert _project(photo, out, "--select", "map:5", "--overwrite") == 0
    assert "kept 1 file in" in capsys.readouterr().err
    new = _manifest(out)["files"]
    assert len(new) == 2 and not (old - set(new)) & set(_found(out))  # no stale tile remains
    assert sorted([*new, "manifest.json", "notes.txt"]) == _found(out)
    assert (out / "notes.txt").read_text() == "mine" and outside.read_bytes() == b"not ours"


def test_a_failed_run_leaves_no_files_behind(tmp_path: Path) -> None:
    good = _photo(tmp_path / "good.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    argv = ["project", str(good), str(broken), *RANDOM, "--layer", "conv2", "--out", str(out)]
    assert main(argv) == 1  # the first image's files were written, then undone
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([*argv, "--overwrite"]) == 1
    assert _found(out) == ["notes.txt"]


# ------------------------------------------------------------------ every sub-command


@pytest.mark.parametrize(
    "command",
    [
        ["project", "IMG"],
        ["maps", "IMG"],
        ["topk", "DATA", "--layers", "conv1"],
        ["occlude", "IMG"],
        ["compare", "IMG"],
        ["sanity", "IMG"],
    ],
)
def test_every_writing_command_refuses_a_non_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    (tmp_path / "data").mkdir()
    photo = _photo(tmp_path / "data" / "in.png")
    argv = [str(photo) if a == "IMG" else str(photo.parent) if a == "DATA" else a for a in command]
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    assert main([*argv, *RANDOM, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert _found(out) == ["old.png"]


def test_occlude_overwrite_replaces_its_own_files(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "in.png")
    out = tmp_path / "occ"
    argv = ["occlude", str(photo), *RANDOM, "--size", "8", "--stride", "4", "--out", str(out)]
    assert main(argv) == 0
    files = _listed_exactly(out)
    assert "occlusion.png" in files and len(files) == 1 + len(_manifest(out)["panels"])
    assert main(argv) == 1
    (out / "panel_stale.png").write_bytes(b"old")  # as if an older run had written it
    document = _manifest(out)
    document["files"].append("panel_stale.png")
    (out / "manifest.json").write_text(json.dumps(document))
    assert main([*argv, "--overwrite"]) == 0
    assert _listed_exactly(out) == files  # the stale panel is gone


def test_maps_writes_a_manifest_with_its_files(tmp_path: Path) -> None:
    out = tmp_path / "maps"
    argv = ["maps", str(_photo(tmp_path / "a.png")), "--layer", "conv1", "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0
    assert _listed_exactly(out) == [_manifest(out)["file"]] == ["a_conv1_maps.png"]


# ------------------------------------------------------------------ topk and --resume


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for number in range(6):
        _photo(root / f"{number}.png", seed=number)
    return root


def _topk(images: Path, out: Path, *extra: str) -> int:
    torch.manual_seed(0)  # the same random weights every run, so a checkpoint can resume
    argv = ["topk", str(images), *RANDOM, "--layers", "conv1", "--k", "2", "--maps", "2"]
    return main([*argv, "--batch-size", "2", "--workers", "0", *extra, "--out", str(out)])


def test_topk_lists_its_sheets_tiles_index_and_checkpoint(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _topk(images, out) == 0
    files = _listed_exactly(out)
    assert {"topk_conv1.png", "topk_index.json", "topk_checkpoint.pt"} <= set(files)
    assert any(name.startswith("tiles/") for name in files)
    assert _manifest(out)["checkpoint"] == "topk_checkpoint.pt"


def test_topk_resume_works_in_its_own_folder_and_replaces_its_files(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _topk(images, out) == 0
    capsys.readouterr()
    assert _topk(images, out) == 1  # a fresh scan would start over: refused
    assert "--resume" in capsys.readouterr().err
    assert _topk(images, out, "--resume", "--no-tiles") == 0
    files = _listed_exactly(out)
    assert not (out / "tiles").exists()  # the earlier run's tiles (and their folders) are gone
    assert "topk_checkpoint.pt" in files
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    # --resume treats a file no manifest lists as --overwrite does (issue 23, item 8):
    # it stays, with a note, and the scan goes on
    assert _topk(images, out, "--resume") == 0
    assert "kept 1 file" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    assert _topk(images, out, "--resume", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine"
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("theirs")
    assert _topk(images, stranger, "--resume") == 1  # no checkpoint, no manifest: not a scan


def test_an_interrupted_topk_keeps_only_its_checkpoint_and_resumes(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real_render = topk_command.render

    def render_then_interrupt(*args: object, **kwargs: object) -> object:
        real_render(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(topk_command, "render", render_then_interrupt)
    assert _topk(images, out) == 130
    assert _found(out) == ["topk_checkpoint.pt"]  # sheets, tiles and their folders undone
    monkeypatch.setattr(topk_command, "render", real_render)
    assert _topk(images, out) == 1  # not without --resume
    assert _topk(images, out, "--resume") == 0
    assert "topk_conv1.png" in _listed_exactly(out)


# ------------------------------------------------------------------ tampered manifests


def _folder_with_manifest(tmp_path: Path, files: object) -> Path:
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"a")
    (folder / "sub" / "b.png").write_bytes(b"b")
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


@pytest.mark.parametrize(
    "bad",
    [
        "../victim.txt",
        "sub/../../victim.txt",
        "/ABSOLUTE",
        "sub\\..\\..\\victim.txt",
        "./a.png",
        "sub//b.png",
        "",
        "sub",  # a folder, not a file
        "manifest.json",
        "link/victim.txt",  # through a symlink to a folder outside
        "link_file",  # a symlink itself
    ],
)
def test_a_manifest_naming_anything_outside_is_refused_before_any_deletion(
    tmp_path: Path, bad: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = _folder_with_manifest(tmp_path, ["a.png", bad.replace("ABSOLUTE", str(victim)[1:])])
    (folder / "link").symlink_to(tmp_path, target_is_directory=True)
    (folder / "link_file").symlink_to(victim)
    before = _snapshot(folder)
    with pytest.raises(InputError, match="refusing"):
        output.prepare_output(folder, overwrite=True)
    assert _snapshot(folder) == before and victim.read_text() == "keep me"
    assert (folder / "link").is_symlink() and (folder / "link_file").is_symlink()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "cannot read"),
        ('{"command": "maps"}', "no 'files' list"),
        ('{"files": {"figure": "a.png"}}', r"field files: Input should be a valid array; refusing"),
        ('["a.png"]', r"field \(top level\): Input should be an object; refusing"),
        ('{"files": ["a.png", 3]}', r"field files\[1\]: Input should be a valid string; refusing"),
    ],
)
def test_an_unreadable_manifest_is_refused(tmp_path: Path, text: str, match: str) -> None:
    folder = _folder_with_manifest(tmp_path, [])
    (folder / "manifest.json").write_text(text)
    before = _snapshot(folder)
    with pytest.raises(InputError, match=match):
        output.prepare_output(folder, overwrite=True)
    assert _snapshot(folder) == before


def test_listed_files_in_sub_folders_are_removed_with_their_emptied_folders(
    tmp_path: Path,
) -> None:
    folder = _folder_with_manifest(tmp_path, ["a.png", "sub/b.png", "gone.png"])
    (folder / "kept").mkdir()
    prepared = output.prepare_output(folder, overwrite=True)
    assert _found(folder) == [] and sorted(os.listdir(folder)) == ["kept"]
    assert prepared.written() == []


def test_a_file_that_is_the_out_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        output.prepare_output(path, overwrite=True)


def test_stale_temporaries_of_a_killed_run_are_removed_before_the_folder_is_checked(
    tmp_path: Path,
) -> None:
    """A SIGKILL mid-write leaves ``.<name>.<16 hex>.tmp``; the next run clears it, in
    sub-folders too, and the folder then counts as empty. Other files stay."""
    out = tmp_path / "out"
    (out / "tiles").mkdir(parents=True)
    stale = [
        out / ".manifest.json.0123456789abcdef.tmp",
        out / "tiles" / ".t.png.00ff00ff00ff00ff.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half")
        os.utime(path, (1, 1))
    prepared = output.prepare_output(out, overwrite=False)
    assert not any(path.exists() for path in stale)
    assert prepared.before == {}
    (out / "keep.tmp").write_bytes(b"not ours")
    with pytest.raises(InputError, match="not empty"):
        output.prepare_output(out, overwrite=False)
