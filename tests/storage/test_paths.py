"""The containment check (deconvnet.storage.paths); generated names are in tests/hostile."""

from __future__ import annotations

from pathlib import Path

import pytest

from deconvnet.storage.paths import (
    UnsafePathError,
    component,
    file_inside,
    inside,
    separate_folders,
)


def test_plain_names_resolve_inside_and_links_that_stay_are_followed(tmp_path: Path) -> None:
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "a.png").write_bytes(b"a")
    (tmp_path / "alias").symlink_to("tiles", target_is_directory=True)
    assert inside(tmp_path, "tiles/a.png") == (tmp_path / "tiles" / "a.png").resolve()
    assert file_inside(tmp_path, "alias/a.png") == (tmp_path / "tiles" / "a.png").resolve()
    assert inside(tmp_path, "new/b.png") == tmp_path.resolve() / "new" / "b.png"  # to write
    with pytest.raises(UnsafePathError, match="passes through a symlink"):
        inside(tmp_path, "alias/a.png", no_symlinks=True)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "'..' part"),
        ("a/../../x", "'..' part"),
        ("/etc/passwd", "absolute"),
        ("C:\\x", "backslash"),
        ("C:x", "absolute"),
        ("~/x", "absolute"),
        ("a//b", "empty"),
        ("", "empty"),
        ("a\x1b[2Jb", "control character"),
        ("x" * 256, "longer than 255"),
        (3, "must be a string"),
        ("out/x", "leaves"),
    ],
)
def test_names_that_could_leave_are_refused_in_one_line(
    tmp_path: Path, name: object, reason: str
) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafePathError, match=reason) as refused:
        inside(tmp_path / "root", name)
    assert "\n" not in str(refused.value) and "\x1b" not in str(refused.value)


def test_file_inside_wants_an_existing_regular_file(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(UnsafePathError, match="missing"):
        file_inside(tmp_path, "gone.png")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        file_inside(tmp_path, "folder")


@pytest.mark.parametrize("text", ["../../victim", "a/b", "..", ".hidden", "\x1b]0;t\x07", ""])
def test_component_is_one_plain_part(text: str) -> None:
    part = component(text)
    assert part and "/" not in part and "\\" not in part and not part.startswith(".")
    assert part.isprintable()


def test_out_must_be_apart_from_its_input(tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    scan.mkdir()
    (tmp_path / "via").symlink_to(scan, target_is_directory=True)
    for out, relation in ((scan, " is "), (scan / "site", "lies inside"),
                          (tmp_path, "holds"), (tmp_path / "via", " is ")):  # fmt: skip
        with pytest.raises(UnsafePathError, match=relation):
            separate_folders(out, scan)
    separate_folders(tmp_path / "site", scan)  # a sibling is fine
