"""What users touch: the ``deconvnet`` command line, which only calls library functions."""
