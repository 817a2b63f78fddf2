"""The ``pipeline`` command line: thin Typer commands over the core stage functions.

One module per group of commands, registered on ``common.app`` in the order ``--help`` lists
them: ``training`` (train, import), ``optimizing`` (prune, quantize, convert), ``checking``
(verify), ``device`` (bench, export), ``searching`` (search), ``running`` (run, report,
models, datasets).
"""
# The order registers the commands in the order --help lists them.
# isort: off
from pipeline.cli import training, optimizing, checking, device, searching, running  # noqa: F401
# isort: on
from pipeline.cli.common import app, main

__all__ = ["app", "main"]
