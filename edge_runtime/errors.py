"""The device package's exceptions; its CLI maps each to one line and an exit code."""
from __future__ import annotations


def first_line(problem: BaseException | str) -> str:
    """The first line of an exception's message (or its type), at most 200 characters: what
    a one-line error can quote of a library's multi-line message."""
    text = str(problem).strip()
    if not text:
        return type(problem).__name__ if isinstance(problem, BaseException) else ""
    return text.splitlines()[0][:200]


class EdgeRuntimeError(Exception):
    exit_code = 1


class ArtifactError(EdgeRuntimeError):
    """A model file that is missing, corrupt, tampered with or unsupported."""

    exit_code = 4


class InputError(EdgeRuntimeError):
    """Inputs of the wrong shape, dtype or values for the model."""

    exit_code = 3


class BackendMissingError(EdgeRuntimeError):
    """The runtime a model needs (LiteRT, ONNX Runtime) is not installed."""

    exit_code = 8
