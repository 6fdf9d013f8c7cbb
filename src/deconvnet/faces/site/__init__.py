"""A static site from a top-k scan: a model card, one page per layer, one page per unit.

Built with Jinja2 templates shipped as package data; every link is relative and every
picture is copied beside the pages, so the site works from ``file://`` with no server and
no network. The live explorer (:mod:`deconvnet.faces.explorer`) serves the same pages.
"""
