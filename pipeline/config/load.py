"""Loading a config: ``sections`` parses it (sections and types), then every value is checked
against what it may be: optimizers and schedules (``core.recipes``), targets and modes
(``formats.kinds``), gates (``config.gates``), devices (``config.devices``), numbers
(``core.limits``). Below the stages: each stage reads its settings from here and none is
imported. The search section's space is the search's own: ``pipeline run`` checks it before
its first stage (``running.orchestrator.check_search``)."""
from __future__ import annotations

import difflib
from pathlib import Path

from pipeline.config.schema import Config, ConfigError, parse_config
from pipeline.core.errors import UsageError


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the file (YAML or TOML), then ``--set`` overrides; checked field by field."""
    config = parse_config(path, overrides)
    check_values(config)
    return config


def check_values(config: Config) -> None:
    """Every value of ``config`` against what its stage allows (``ConfigError`` names the field)."""
    from pipeline.config.sections import DISTRIBUTE
    from pipeline.config.stages import ENGINES
    from pipeline.core.recipes import LR_SCHEDULES, OPTIMIZERS
    from pipeline.data.streaming import STREAM_MODES
    from pipeline.formats.kinds import QUANT_MODES, TARGETS
    from pipeline.formats.targets import TARGETS as DEPLOY_TARGETS

    checks = [("train.optimizer", config.train.optimizer, OPTIMIZERS),
              ("train.lr_schedule", config.train.lr_schedule, LR_SCHEDULES),
              ("train.distribute", config.train.distribute, DISTRIBUTE),
              ("train.stream", config.train.stream, STREAM_MODES),
              ("constraints.target", config.constraints.target, tuple(DEPLOY_TARGETS))]
    checks += [(f"quantize.modes[{i}]", m, tuple(QUANT_MODES)) for i, m in enumerate(config.quantize.modes)]
    checks += [(f"convert.targets[{i}]", t, TARGETS) for i, t in enumerate(config.convert.targets)]
    from pipeline.formats.calibration import CHOICES

    checks += [("quantize.engine", config.quantize.engine, ENGINES),
               ("quantize.calibration", config.quantize.calibration, CHOICES)]
    for location, value, allowed in checks:
        if value is not None and value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{location}: unknown value '{value}'{hint}; known: {', '.join(allowed)}")
    if config.train.task is not None:
        from pipeline.core.tasks import TASKS, TaskError, normalize_task

        try:
            normalize_task(config.train.task)
        except TaskError:
            raise ConfigError(f"train.task: unknown value '{config.train.task}'; known: {', '.join(TASKS)}") from None
    if config.quantize.qat and "int8" not in config.quantize.modes:
        raise ConfigError("quantize.qat: quantization-aware training makes a fully integer model: "
                          "add int8 to quantize.modes")
    for i, sparsity in enumerate(config.prune.sparsity):
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(f"prune.sparsity[{i}]: must lie in [0, 1), got {sparsity}")
    if not config.prune.sparsity:
        raise ConfigError("prune.sparsity: give at least one value (0 means no pruning)")
    _check_numbers(config)
    from pipeline.config.gates import VerifyOptions

    try:
        VerifyOptions(gates=config.verify.gates).resolved_gates()
    except UsageError as exc:
        raise ConfigError(f"verify.gates: {exc}") from None
    from pipeline.config.devices import parse_device

    for i, device in enumerate(config.bench.devices):
        try:
            parse_device(device)
        except UsageError as exc:
            raise ConfigError(f"bench.devices[{i}]: {exc}") from None
    from pipeline.formats.c_array import check_symbol

    try:
        check_symbol(config.export.symbol)
    except UsageError as exc:
        raise ConfigError(f"export.symbol: {exc}") from None
    calibration = config.quantize.calibration_data
    if calibration and not Path(calibration).is_file():
        raise ConfigError(f"quantize.calibration_data: {calibration} "
                          f"{'is not a regular file' if Path(calibration).exists() else 'does not exist'}")


# Numeric fields, checked against pipeline.core.limits before the first stage runs, so a typo
# does not surface only after training.
_NUMERIC_FIELDS = (
    "train.epochs", "train.batch_size", "train.learning_rate", "train.early_stopping",
    "data.seed", "data.val_fraction", "data.test_fraction", "data.image_size",
    "prune.fine_tune_epochs", "prune.learning_rate", "quantize.calibration_samples",
    "quantize.qat_epochs", "quantize.qat_learning_rate",
    "convert.opset", "bench.runs", "bench.warmup", "bench.min_seconds",
    "constraints.max_accuracy_drop", "constraints.max_latency_ms", "constraints.max_size_kb",
    "constraints.max_ram_kb", "constraints.max_flash_kb",
)


def _check_numbers(config: Config) -> None:
    from pipeline.core.limits import check

    for location in _NUMERIC_FIELDS:
        section, _, name = location.partition(".")
        check(name, getattr(getattr(config, section), name), label=f"{location}:")
    for i, threads in enumerate(config.bench.threads):
        check("threads", threads, label=f"bench.threads[{i}]:")
    if not config.bench.threads:
        raise ConfigError("bench.threads: give at least one thread count")
