"""The live explorer: a FastAPI app over one model fixed at start-up (``deconvnet serve``).

Choose or upload an image, see a layer's feature maps as a grid (DeepVis), click a map or
a pixel of one to get that unit's projection and receptive-field box, and beside it the
unit's top-k from a scan, linked to the static site's unit page. The server calls the
library (the engine's :class:`~deconvnet.engine.engine.Deconvnet`, the figures' renderers),
as the CLI does. FastAPI, uvicorn and python-multipart come with ``deconvnet[explorer]``.
"""
