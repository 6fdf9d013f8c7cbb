"""``errors.one_line``: the one way a message quotes another error's text."""

from __future__ import annotations

from deconvnet.errors import one_line


def test_whitespace_runs_and_newlines_become_one_space() -> None:
    error = RuntimeError("shape mismatch:\n  got (1, 3)\t and (2, 3)  ")
    assert one_line(error) == "shape mismatch: got (1, 3) and (2, 3)"


def test_an_error_without_text_gives_its_type_name() -> None:
    assert one_line(MemoryError()) == "MemoryError"
    assert one_line("") == ""  # plain text stays what it is


def test_a_limit_cuts_with_an_ellipsis() -> None:
    text = one_line(ValueError("x" * 500), 200)
    assert len(text) == 200 and text.endswith("…")
    assert one_line(ValueError("short"), 200) == "short"
