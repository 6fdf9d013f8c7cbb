"""Where files go: the ground room under every other (only :mod:`deconvnet.errors` is lower).

:mod:`~deconvnet.storage.atomic` is the one atomic file writer (a crash or a full disk never
leaves a half-written file); :mod:`~deconvnet.storage.paths` is the one containment check:
every file name read from a file (a scan's index, a manifest) and every name made from inputs
is resolved inside its folder by it before anything is read or written.
"""
