"""Pixels in: decode any image file, describe what a model wants, and read whole datasets.

Nothing here knows a network: :mod:`~deconvnet.inputs.images` turns files into RGB arrays
and tensors, :mod:`~deconvnet.inputs.preprocessing` says how a model wants its pixels,
:mod:`~deconvnet.inputs.datasets` serves folders and arrays of images to dataset scans.
"""
