"""The ``pipeline`` command line: thin Typer commands over the core stage functions.

One module per group of commands, registered on ``common.app`` in the order ``--help`` lists
them: ``training`` (train, import, prune), ``optimizing`` (quantize, convert), ``checking``
(verify), ``device`` (bench, export), ``searching`` (search), ``running`` (run, report,
models, datasets).
"""
from pipeline.cli import training, optimizing, checking, device, searching, running  # noqa: F401  (registers)
from pipeline.cli.common import _items, app, main  # noqa: F401
from pipeline.cli.device import bench  # noqa: F401
from pipeline.cli.searching import _space  # noqa: F401
