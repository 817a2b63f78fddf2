"""The project's one exception family.

Core code raises these; the CLI turns each into one line on stderr and the exit code
below (documented in the README). Anything else escaping is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class PipelineError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(PipelineError):
    """An option value or combination that cannot work."""

    exit_code = 2


class DataError(PipelineError):
    """Missing, corrupt or inconsistent data."""

    exit_code = 3


class ModelError(PipelineError):
    """A model file that cannot be loaded, or a model that does not fit the data."""

    exit_code = 4


class ConversionError(PipelineError):
    """Quantization or conversion failed (unsupported ops, missing calibration data...)."""

    exit_code = 5


class ParityError(PipelineError):
    """An artifact failed a verification gate."""

    exit_code = 6


class CollapseError(PipelineError):
    """Training produced a model that does not work in inference mode (chance-level accuracy)."""

    exit_code = 10


class RunDirError(PipelineError):
    """The run directory is missing, locked, unwritable or from another pipeline version."""

    exit_code = 7


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UsageError:
    """An error for an unknown registry name that suggests the closest valid one."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UsageError(f"unknown {kind} '{name}'.{hint} Known: {', '.join(known)}")
