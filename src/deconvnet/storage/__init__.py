"""Files on disk, below every room that writes them: :mod:`~deconvnet.storage.atomic`, the
one atomic file writer (a crash or a full disk never leaves a half-written file)."""
