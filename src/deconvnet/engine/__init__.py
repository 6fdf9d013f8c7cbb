"""The reverse pass: project chosen activations of a layer back to pixel space.

:class:`~deconvnet.engine.engine.Deconvnet` is the one verb (``project``); rules say what
each nonlinearity does on the way down, policies pick a rule per torch function,
selections choose the seeded activations, :mod:`~deconvnet.engine.graph` records the forward
pass as a graph, :mod:`~deconvnet.engine.windowed` runs single-unit seeds on receptive-field
windows of it, :mod:`~deconvnet.engine.receptive` traces those fields,
and :mod:`~deconvnet.engine.compat` reproduces other tools' choices. It reads models and
inputs, and never draws.
"""
