"""The ``pipeline`` command line: thin Typer commands over the core stage functions.

One module per group of commands, registered on ``common.app`` in the order ``--help`` lists
them: ``training`` (train, import), ``optimizing`` (prune, quantize, convert), ``checking``
(verify), ``device`` (bench, export), ``searching`` (search), ``running`` (run, report,
models, datasets).
"""
# isort: off  (the order registers the commands as --help lists them)
from pipeline.cli import checking, device, optimizing, running, searching, training  # noqa: F401

# isort: on
from pipeline.cli.common import app, main

__all__ = ["app", "main"]
