"""The paper's experiments built on the engine: each computes and returns a dataclass.

Top-k per feature map over a dataset (Fig. 2, :mod:`~deconvnet.instruments.topk`),
occlusion (Fig. 7, :mod:`~deconvnet.instruments.occlusion`), the reverse rules side by side
(:mod:`~deconvnet.instruments.compare`) and the randomisation sanity check
(:mod:`~deconvnet.instruments.sanity`). Instruments never draw: their pictures are in
:mod:`deconvnet.figures`; every file they write goes through the one atomic writer of
:mod:`deconvnet.storage`.
"""
