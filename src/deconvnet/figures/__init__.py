"""Every picture the package makes, and the files it writes them to.

One look for all of them (:mod:`~deconvnet.figures.style`: colours, fonts, spacing);
primitives (:mod:`~deconvnet.figures.render`: display scales, grids, crops, contact sheets;
:mod:`~deconvnet.figures.panels`: colour maps, titled panels, legends); atomic PNG and JSON
writing (:mod:`~deconvnet.figures.files`); then one module per result drawn: projection
sheets, top-k sheets, occlusion panels, the rule comparison and the sanity check.
"""
