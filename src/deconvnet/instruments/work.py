"""Every long job states its size first and is bounded: no instrument runs unbounded.

Before any work, an instrument counts what it will do, in units that each cost about one
forward pass of one image: invariance its transformed images (images x amounts), occlusion
its occluder positions, correspondence its masked images (images x (1 + parts + trials)),
the top-k projection stage its projections (maps x k per layer). :func:`check_work` refuses
a count over the ceiling (:data:`DEFAULT_MAX_WORK` unless the caller raises it, with
``max_work=`` or ``--max-work N``) in one line that gives the count, so a typo such as
``--range 0:360:0.001`` (360,001 transforms) or a ``parts.json`` of 10,000 parts ends at
once instead of running for days; the same count is the ``total`` the progress callback
gets first, so a progress bar shows the estimate from the start.
"""

from __future__ import annotations

from deconvnet.errors import InputError

DEFAULT_MAX_WORK = 100_000
"""Ceiling on the units of work (forward passes or projections of one image) of one call:
about 20 minutes of SqueezeNet at 227 px on one CPU core, and 10 to 1,000 times what the
paper's figures need (Fig. 5: 13 amounts x 5 images; Fig. 7 at 224 px: 529 positions)."""


class WorkLimitError(InputError):
    """A job whose counted work exceeds the ceiling it was given."""


def check_work(count: int, max_work: int | None, *, what: str, unit: str) -> int:
    """``count`` when within ``max_work`` (``None``: no ceiling), else :class:`WorkLimitError`.

    ``what`` names the job (``"invariance"``) and ``unit`` what it counts
    (``"transformed images"``).
    """
    if max_work is not None and count > max_work:
        raise WorkLimitError(
            f"{what} would run {count:,} {unit}, over the limit of {max_work:,}; "
            f"ask for less, or raise the limit (--max-work {count}, max_work={count})"
        )
    return count
