"""The search space: each zoo model's builder options, the training and deployment choices
every model shares, the command's options, and a candidate's model as built."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.config.devices import DEFAULT_REMOTE_ROOT
from pipeline.config.sections import ConstraintsSection, DataSection, SearchSection
from pipeline.core.errors import UsageError
from pipeline.core.recipes import OPTIMIZERS  # any optimizer training takes
from pipeline.formats.kinds import INTEGER_MODES

# Per zoo model: builder options to explore (strings where the builder takes a tuple).
SPACES: dict[str, dict[str, list]] = {
    "mnist_cnn": {"filters": ["8", "8-16", "16-32", "32-64"], "dense": [32, 64], "stem_pool": [1, 2]},
    "mlp": {"hidden": ["32", "64", "128-64"]},
    "resnet8": {"filters": ["8-16-32", "16-32-64"]},
    "ds_cnn": {"width": [32, 64], "blocks": [2, 4]},
    "mobilenet_v1": {"alpha": [0.25, 0.5]},
    # autoencoders: chosen by their int8 artifact's reconstruction error on (normal) validation data
    "autoencoder": {"width": [64, 128], "bottleneck": [4, 8], "depth": [1, 2]},
    "ad_autoencoder": {"width": [64, 128], "bottleneck": [4, 8], "depth": [2, 4]},
}


# Hyperparameter values -> the zoo builder's keyword arguments.
_BUILDER_ARGS = {
    "mnist_cnn": lambda v: {"filters": _widths(v["filters"]), "dense": v["dense"], "stem_pool": v["stem_pool"]},
    "mlp": lambda v: {"hidden": _widths(v["hidden"])},
    "resnet8": lambda v: {"filters": _widths(v["filters"])},
    "ds_cnn": lambda v: {"filters": v["width"], "blocks": v["blocks"]},
    "mobilenet_v1": lambda v: {"alpha": v["alpha"]},
    "autoencoder": lambda v: {"hidden": v["width"], "bottleneck": v["bottleneck"], "depth": v["depth"]},
    "ad_autoencoder": lambda v: {"hidden": v["width"], "bottleneck": v["bottleneck"], "depth": v["depth"]},
}


# Training and deployment choices every model shares.
COMMON_SPACE: dict[str, list] = {
    "learning_rate": [1e-3, 3e-3], "optimizer": ["adam", "rmsprop"], "batch_size": [32, 64],
    "sparsity": [0.0, 0.5], "quantization": ["int8"],
}


MARKER = "search.json"


# Options a resumed search may change: they do not change what a finished trial measured.
RESUMABLE = ("trials", "time_limit_s", "rescore", "ssh_options", "remote_root")


def _widths(text: str) -> tuple[int, ...]:
    parts = str(text).split("-")
    if not all(p.isdigit() and 1 <= int(p) <= 4096 for p in parts) or len(parts) > 8:
        raise ValueError("layer widths joined by '-', each 1..4096, e.g. 16-32")
    return tuple(int(p) for p in parts)


def _one_of(allowed):
    def check(value):
        if value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value
    return check


def _number(kind, low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ValueError(f"{'an integer' if kind is int else 'a number'} in [{low:g}, {high:g}]")
        if not low <= value <= high:
            raise ValueError(f"in [{low:g}, {high:g}]")
        return kind(value)
    return check


# Every hyperparameter's check: the value as the trial uses it, or ValueError saying what fits.
_VALUES = {
    "filters": lambda v: "-".join(map(str, _widths(v))), "hidden": lambda v: "-".join(map(str, _widths(v))),
    "dense": _number(int, 1, 4096), "stem_pool": _number(int, 1, 8), "width": _number(int, 1, 4096),
    "blocks": _number(int, 1, 16), "alpha": _number(float, 0.05, 2.0),
    "bottleneck": _number(int, 1, 4096), "depth": _number(int, 1, 16),
    "learning_rate": _number(float, 1e-6, 1.0), "optimizer": _one_of(OPTIMIZERS),
    "batch_size": _number(int, 1, 4096), "sparsity": _number(float, 0.0, 0.9),
    "quantization": _one_of(INTEGER_MODES),
}


@dataclass
class SearchOptions:
    """Defaults are the config's ``search`` and ``constraints`` sections."""

    model: str = "mnist_cnn"
    dataset: str = DataSection.dataset
    trials: int = SearchSection.trials
    time_limit_s: float | None = SearchSection.time_limit_s
    epochs: int = SearchSection.epochs
    max_latency_ms: float | None = ConstraintsSection.max_latency_ms
    max_size_kb: float | None = ConstraintsSection.max_size_kb
    max_ram_kb: float | None = ConstraintsSection.max_ram_kb
    seed: int = DataSection.seed
    bench_seconds: float = SearchSection.bench_seconds
    rescore: int = SearchSection.rescore
    max_latency_ratio: float | None = SearchSection.max_latency_ratio
    device: str | None = SearchSection.device
    # hyperparameter -> values, replacing the model's defaults (SPACES, COMMON_SPACE)
    space: dict[str, list] = field(default_factory=dict)
    ssh_options: list[str] = field(default_factory=list)
    remote_root: str = DEFAULT_REMOTE_ROOT

    def validate(self) -> None:
        from pipeline.core.limits import check

        if self.model not in SPACES:
            from pipeline.core.errors import unknown_name

            raise unknown_name("searchable model", self.model, SPACES)
        check("epochs", self.epochs)
        check("seed", self.seed)
        check("max_latency_ms", self.max_latency_ms, label="--max-latency-ms")
        check("max_size_kb", self.max_size_kb, label="--max-size-kb")
        check("max_ram_kb", self.max_ram_kb, label="--max-ram-kb")
        check("min_seconds", self.bench_seconds, label="--bench-seconds")
        if self.max_latency_ratio is not None:
            ratio = self.max_latency_ratio
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.01 <= ratio <= 100:
                raise UsageError(f"--max-latency-ratio must lie in [0.01, 100], got {ratio}")
            if self.max_latency_ms is not None:
                raise UsageError("give --max-latency-ms or --max-latency-ratio, not both")
        if not 0 <= self.rescore <= 50:
            raise UsageError(f"--rescore must lie in [0, 50], got {self.rescore}")
        if not 1 <= self.trials <= 10_000:
            raise UsageError(f"--trials must lie in [1, 10000], got {self.trials}")
        if self.time_limit_s is not None and not 0 < self.time_limit_s <= 7 * 24 * 3600:
            raise UsageError(f"--time-limit must lie in (0, 604800] seconds, got {self.time_limit_s}")
        if self.device is not None:
            from pipeline.config.devices import check_remote_dir, parse_device

            parse_device(self.device)
            check_remote_dir(self.remote_root)
        self.hyperparameters()

    def hyperparameters(self) -> dict[str, list]:
        """The search space: the model's defaults with the user's values in their place."""
        space = {**SPACES[self.model], **COMMON_SPACE}
        for name, values in self.space.items():
            if name not in space:
                from pipeline.core.errors import unknown_name

                raise unknown_name(f"hyperparameter for {self.model}", name, space)
            if not isinstance(values, list) or not values:
                raise UsageError(f"--space {name}: give at least one value")
            checked = []
            for value in values:
                try:
                    checked.append(_VALUES[name](value))
                except (TypeError, ValueError) as exc:
                    raise UsageError(f"--space {name}: {value!r} is not {exc}") from None
            space[name] = list(dict.fromkeys(checked))
        return space


def options_from_config(config) -> SearchOptions:
    """The search ``pipeline run`` does: the config's model, data and budgets."""
    section, constraints = config.search, config.constraints
    return SearchOptions(model=config.train.model, dataset=config.data.dataset, seed=config.data.seed,
                         trials=section.trials, time_limit_s=section.time_limit_s, epochs=section.epochs,
                         bench_seconds=section.bench_seconds, rescore=section.rescore, device=section.device,
                         max_latency_ratio=section.max_latency_ratio,
                         space=dict(section.space),
                         max_latency_ms=constraints.max_latency_ms, max_size_kb=constraints.max_size_kb,
                         max_ram_kb=constraints.max_ram_kb)


def _build(model: str, data, values: dict):
    """The zoo model with these hyperparameters' builder options, for this data set."""
    from pipeline.core.recipes import zoo_spec

    return zoo_spec(model).build(tuple(data.input_shape), int(data.num_classes), **_BUILDER_ARGS[model](values))


def architecture(model: str, values: dict) -> str:
    """What decides a candidate's latency, size and arena: its shape and its quantization."""
    return json.dumps({k: values[k] for k in (*SPACES[model], "sparsity", "quantization")}, sort_keys=True)


def _pruned(model, sparsity: float):
    """``model`` with its filters/units structurally removed at ``sparsity`` (0: as it is)."""
    if not sparsity:
        return model
    from pipeline.optimizing.structured import shrink

    try:
        return shrink(model, sparsity)
    except UsageError:
        return model  # nothing prunable: the candidate goes on unpruned


def task_of(options: SearchOptions) -> str:
    """The searched model's task: a classifier's trials are judged by accuracy, an
    autoencoder's by reconstruction error, a regression's by MAE (on validation)."""
    from pipeline.core.recipes import model_task

    return model_task(options.model)
