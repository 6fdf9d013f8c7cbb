"""The paper's Fig. 2, computed: the top-k activations of each feature map over a dataset.

:mod:`~deconvnet.instruments.topk.scan` makes one pass over the data in
O(k x maps x layers) memory; each image counts at most once per map, with its own strongest
activation of that map (as in the paper). :mod:`~deconvnet.instruments.topk.state` holds
the running top-k, and states of disjoint shards merge. :mod:`~deconvnet.instruments.topk.project`
projects each ranked activation separately with the engine, reading every image once.
Drawing the sheets is the figures room's (:func:`deconvnet.figures.topk.render`); the
three steps together are the public :mod:`deconvnet.topk`.
"""
