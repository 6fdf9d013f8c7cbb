"""Hook bookkeeping: every registration goes into one list that removes them all.

Entry points register inside ``with HandleList() as handles:`` so hooks never outlive a
call, whether it succeeds or raises.
"""

from __future__ import annotations

from typing import Protocol


class RemovableHandle(Protocol):
    def remove(self) -> None: ...


class HandleList(list[RemovableHandle]):
    """A list of hook handles, removed together (in reverse order) on ``remove()`` or exit."""

    def remove(self) -> None:  # type: ignore[override]  # list.remove takes a value
        while self:
            self.pop().remove()

    def __enter__(self) -> HandleList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class LayerReached(Exception):  # control flow, not an error
    """Raised by the layer hook to stop the forward pass once the layer's output is known.

    Nothing above the projected layer contributes to the projection, so the rest of the
    forward pass is skipped; this also keeps later in-place operations from changing the
    recorded output.
    """
