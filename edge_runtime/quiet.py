"""Native libraries (TensorFlow, LiteRT, absl) write banners and notices straight to file
descriptor 2, where Python's ``logging`` and ``warnings`` filters cannot reach them. Around
those calls fd 2 goes to a temporary file; what was written is kept for ``--verbose`` and for
the message of a failure, instead of burying a one-line error under five lines of noise."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from typing import Iterator

# Set by the command line's --verbose: let native output through untouched.
VERBOSE_ENV = "EDGE_PIPELINE_VERBOSE"
_captured: list[str] = []


def captured_text() -> str:
    """Everything native code wrote to stderr inside ``quiet_native`` blocks so far."""
    return "".join(_captured)


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Send fd 2 (and Python's warnings) to a temporary file for the length of the block."""
    if os.environ.get(VERBOSE_ENV):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedding host)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _captured.append(sink.read().decode("utf-8", "replace"))
