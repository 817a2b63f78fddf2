"""The project's one exception family.

Core code raises these; the CLI turns each into one line on stderr and the exit code
below (documented in the README). Anything else escaping is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable

from edge_runtime.errors import CodedError


class PipelineError(CodedError):
    """Base class: a problem the user can fix (exit 1 unless a subclass says otherwise)."""


class UsageError(PipelineError, exit_code=2):
    """An option value or combination that cannot work."""


class DataError(PipelineError, exit_code=3):
    """Missing, corrupt or inconsistent data."""


class ModelError(PipelineError, exit_code=4):
    """A model file that cannot be loaded, or a model that does not fit the data."""


class ConversionError(PipelineError, exit_code=5):
    """Quantization or conversion failed (unsupported ops, missing calibration data...)."""


class ParityError(PipelineError, exit_code=6):
    """An artifact failed a verification gate."""


class RunDirError(PipelineError, exit_code=7):
    """The run directory is missing, locked, unwritable or from another pipeline version."""


class CollapseError(PipelineError, exit_code=10):
    """Training produced a model that does not work in inference mode (chance-level accuracy)."""


class ConstraintError(PipelineError, exit_code=11):
    """No artifact meets the target and constraints asked for (each one's reason is named)."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UsageError:
    """An error for an unknown registry name that suggests the closest valid one."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UsageError(f"unknown {kind} '{name}'.{hint} Known: {', '.join(known)}")
