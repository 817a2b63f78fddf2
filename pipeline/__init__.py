"""Keras → edge pipeline: train, prune, quantize, convert, verify, bench, report."""
__version__ = "0.1.0"
