"""What a settings field is: a config field (in the config file, ``config.json`` and ``--set``)
or a per-command one that a command line or the orchestrator gives for one invocation (which
model, which artifacts, where to write)."""
from __future__ import annotations

import dataclasses
from typing import Any


def per_command(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING):
    """A setting of one invocation, not of the config file."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"config": False})


def config_fields(settings) -> list[dataclasses.Field]:
    """The fields of a settings class (or instance) that the config file holds, in order."""
    return [f for f in dataclasses.fields(settings) if f.metadata.get("config", True)]


def config_values(settings) -> dict[str, Any]:
    """The config fields of ``settings`` as plain data (``config.json``, the stage cache)."""
    return {f.name: _plain(getattr(settings, f.name)) for f in config_fields(settings)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return config_values(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
