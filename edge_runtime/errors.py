"""The device package's exceptions; its CLI maps each to one line and an exit code."""
from __future__ import annotations


def first_line(problem: BaseException | str) -> str:
    """The first line of an exception's message (or its type), at most 200 characters: what
    a one-line error can quote of a library's multi-line message."""
    text = str(problem).strip()
    if not text:
        return type(problem).__name__ if isinstance(problem, BaseException) else ""
    return text.splitlines()[0][:200]


class CodedError(Exception):
    """A problem the user can fix; ``exit_code`` is what a command exits with. Subclasses set
    it in their header: ``class InputError(EdgeRuntimeError, exit_code=3)``."""

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class EdgeRuntimeError(CodedError):
    """The device package's base class."""


class ArtifactError(EdgeRuntimeError, exit_code=4):
    """A model file that is missing, corrupt, tampered with or unsupported."""


class InputError(EdgeRuntimeError, exit_code=3):
    """Inputs of the wrong shape, dtype or values for the model."""


class BackendMissingError(EdgeRuntimeError, exit_code=8):
    """The runtime a model needs (LiteRT, ONNX Runtime) is not installed."""
