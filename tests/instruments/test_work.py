"""The work ceiling (deconvnet.instruments.work); the instruments' counts are checked
against it in tests/hostile/test_work.py."""

from __future__ import annotations

import pytest

from deconvnet.instruments.work import DEFAULT_MAX_WORK, WorkLimitError, check_work


def test_the_ceiling_is_inclusive_and_optional() -> None:
    assert (
        check_work(DEFAULT_MAX_WORK, DEFAULT_MAX_WORK, what="job", unit="things")
        == DEFAULT_MAX_WORK
    )
    assert check_work(10**15, None, what="job", unit="things") == 10**15
    with pytest.raises(
        WorkLimitError, match=r"job would run 101 things, over the limit of 100"
    ) as refused:
        check_work(101, 100, what="job", unit="things")
    assert "--max-work 101" in str(refused.value)
