"""The device package's exceptions; its CLI maps each to one line and an exit code."""
from __future__ import annotations


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
