"""The ``pipeline run`` configuration: one typed tree, read from YAML or TOML, every field
settable with ``--set section.field=value``, validated with field-located errors. Its sections
are the stages' settings classes (``config.stages``, ``config.gates``) and the shared ones
(``config.sections``); per-command fields are not part of it."""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from pipeline.config.fields import config_fields, config_values
from pipeline.config.gates import VerifyOptions
from pipeline.config.sections import ConstraintsSection, DataSection, SearchSection, TrainSection
from pipeline.config.stages import BenchOptions, ConvertOptions, ExportOptions, PruneOptions, QuantizeOptions
from pipeline.core.errors import UsageError


class ConfigError(UsageError):
    """A config field that is unknown or of the wrong type; the message names the field."""


@dataclass
class Config:
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    prune: PruneOptions = field(default_factory=PruneOptions)
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    bench: BenchOptions = field(default_factory=BenchOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    search: SearchSection = field(default_factory=SearchSection)
    constraints: ConstraintsSection = field(default_factory=ConstraintsSection)

    def to_dict(self) -> dict[str, Any]:
        return config_values(self)

    def section(self, name: str) -> dict[str, Any]:
        return config_values(getattr(self, name))


def parse_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the file (YAML or TOML), then ``--set`` overrides, each field of its type.
    The values a field allows are the owning stage's to say: ``pipeline.config.load.load_config``
    parses, then checks them."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read(Path(path))
    config = _build(Config, raw, "")
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(f"--set takes SECTION.FIELD=VALUE, got '{text}'")
        _set(config, key.strip(), parse_value(value.strip()))
    return config


# A config is a few sections of scalars and short lists: these bounds leave a wide margin and
# stop a YAML "billion laughs" (nested aliases that expand to gigabytes) before it expands.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 20_000


def _count_values(data: Any, budget: int = MAX_CONFIG_VALUES) -> int:
    """How many values ``data`` holds once its aliases are expanded (stops past ``budget``)."""
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > budget:
            break
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file" if path.exists()
                          else f"config file {path} does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {size:,} bytes: a config is at most {MAX_CONFIG_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path} is not a readable text config ({type(exc).__name__})") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: expected a .yaml, .yml or .toml config")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - YAML and TOML parsers each have their own
        raise ConfigError(f"{path} is not valid {path.suffix.lstrip('.').upper()}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    if _count_values(data) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{path} expands to more than {MAX_CONFIG_VALUES:,} values (nested YAML aliases?): "
                          f"a config is a few sections of settings")
    return data


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in config_fields(cls)]
    values = {}
    for key, value in raw.items():
        location = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"{location}: unknown field{hint}")
        values[key] = _coerce(hints[key], value, location)
    return cls(**values)


def _coerce(kind, value, location: str):
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, location)
    origin, args = get_origin(kind), get_args(kind)
    if origin is list:
        if isinstance(value, str) and "," in value:  # --set quantize.modes=int8,float16
            value = [parse_value(item.strip()) for item in value.split(",")]
        items = value if isinstance(value, list) else [value]  # a scalar is a one-item sweep
        return [_coerce(args[0], item, f"{location}[{i}]") for i, item in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{location}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{location}.{k}") for k, v in value.items()}
    if type(None) in args:  # Optional[X]
        if value is None:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, location)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{location}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{location}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{location}: expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{location}: expected a string, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """``--set`` values are JSON where they parse (numbers, lists, true/null), else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set(config: Config, key: str, value: Any) -> None:
    """``SECTION.FIELD=VALUE``; a mapping field also takes deeper keys, merged into what it
    holds: ``verify.gates.quantized.metric_drop=0.02``."""
    section_name, _, path = key.partition(".")
    field_name, _, deeper = path.partition(".")
    sections = [f.name for f in dataclasses.fields(Config)]
    if section_name not in sections or not field_name:
        close = difflib.get_close_matches(section_name, sections, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"--set {key}: unknown section{hint}; use SECTION.FIELD=VALUE")
    section = getattr(config, section_name)
    if deeper:
        current = getattr(section, field_name, None)
        if not isinstance(current, dict):
            raise ConfigError(f"--set {key}: {section_name}.{field_name} is not a mapping; "
                              f"use {section_name}.{field_name}=VALUE")
        value = _merged(current, deeper.split("."), value)
    updated = _build(type(section), {field_name: value}, section_name)
    setattr(section, field_name, getattr(updated, field_name))


def _merged(mapping: dict, keys: list[str], value: Any) -> dict:
    merged = dict(mapping)
    head, rest = keys[0], keys[1:]
    merged[head] = _merged(merged.get(head) or {}, rest, value) if rest else value
    return merged
