"""The ``pipeline run`` configuration: one typed tree, read from YAML or TOML, every field
settable with ``--set section.field=value``, validated with field-located errors."""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from edge_runtime.bench import DEFAULT_MIN_SECONDS
from pipeline.core.errors import UsageError
from pipeline.formats.onnx import DEFAULT_OPSET


class ConfigError(UsageError):
    """A config field that is unknown or of the wrong type; the message names the field."""


# train.distribute: one device, every local GPU, or several machines (TF_CONFIG).
DISTRIBUTE = ("none", "mirrored", "multiworker")


@dataclass
class DataSection:
    dataset: str = "digits"
    seed: int = 0
    image_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass
class TrainSection:
    model: str = "mnist_cnn"
    # null: the model's default recipe (``pipeline models``)
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    lr_schedule: str | None = None
    early_stopping: int = 0
    class_weight: str | None = None
    augment: bool = False
    # auto: stream batches from the raw split when it is large (pipeline.data.streaming.STREAM_BYTES)
    stream: str = "auto"
    mixed_precision: bool = False
    distribute: str = "none"
    backend: str | None = None  # tensorflow, jax or torch; not tensorflow: trains in a child process
    # Go on to prune/quantize a model whose training collapsed (chance-level accuracy).
    allow_collapse: bool = False


@dataclass
class PruneSection:
    sparsity: list[float] = field(default_factory=lambda: [0.0, 0.5])
    structured: bool = True
    fine_tune_epochs: int = 8
    learning_rate: float = 1e-3


@dataclass
class QuantizeSection:
    modes: list[str] = field(default_factory=lambda: ["int8", "float16", "dynamic"])
    calibration_samples: int = 300
    # raw samples (.npy / .npz "x") for the int8 TFLite and ONNX, instead of the training split
    calibration_data: str | None = None
    float_io: bool = False
    # int8 that fails its gates on the validation split: raise the fewest layers' precision
    # (model_int8_mixed.tflite). null: try, warn if no mix passes; true: insist; false: never.
    recover: bool | None = None


@dataclass
class ConvertSection:
    targets: list[str] = field(default_factory=lambda: ["tflite", "onnx"])
    opset: int = DEFAULT_OPSET


@dataclass
class VerifySection:
    gates: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class BenchSection:
    threads: list[int] = field(default_factory=lambda: [1])
    runs: int = 100
    warmup: int = 20
    min_seconds: float = DEFAULT_MIN_SECONDS  # as `pipeline bench` and `edge-runtime bench`
    devices: list[str] = field(default_factory=list)


@dataclass
class ExportSection:
    # Write c_array/model_data.{h,cc}: the recommended integer TFLite model (else the base
    # int8) as C++ source for a TFLite Micro project.
    c_array: bool = False
    symbol: str = "g_model_data"  # the array's C name


@dataclass
class SearchSection:
    # pipeline run: search train.model's variants on data.dataset within the constraints'
    # latency/size/arena budgets, then continue from the winner instead of training the model
    # as it comes. `pipeline search` takes its defaults from here too.
    enabled: bool = False
    trials: int = 12
    time_limit_s: float | None = None   # start no trial after this many seconds
    epochs: int = 15                    # per trial
    bench_seconds: float = 1.0          # timing per trial measurement
    # Before the winner is chosen, up to this many fitting trials within the validation noise
    # of the best are re-scored by 3-fold cross-validation over train+validation (0: rank on
    # validation alone).
    rescore: int = 3
    # Latency budget as a fraction of the zoo model's own p50 (its architecture, timed at the
    # start of the search where the trials are timed): 0.33 asks for a third of it on any
    # machine. Instead of constraints.max_latency_ms, not with it.
    max_latency_ratio: float | None = None
    device: str | None = None           # ssh://user@host[:port]: time the trials there
    # Hyperparameter -> the values to try, replacing the zoo model's defaults
    # (`pipeline search --help` lists the names), e.g. {filters: ["8", "16-32"]}.
    space: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class ConstraintsSection:
    max_accuracy_drop: float | None = 0.01
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    # A microcontroller target: TFLM's measured tensor arena and the model's flash bytes.
    max_ram_kb: float | None = None
    max_flash_kb: float | None = None


@dataclass
class Config:
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    prune: PruneSection = field(default_factory=PruneSection)
    quantize: QuantizeSection = field(default_factory=QuantizeSection)
    convert: ConvertSection = field(default_factory=ConvertSection)
    verify: VerifySection = field(default_factory=VerifySection)
    bench: BenchSection = field(default_factory=BenchSection)
    export: ExportSection = field(default_factory=ExportSection)
    search: SearchSection = field(default_factory=SearchSection)
    constraints: ConstraintsSection = field(default_factory=ConstraintsSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


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
        raise ConfigError(f"config file {path} does not exist")
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
    names = [f.name for f in dataclasses.fields(cls)]
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
