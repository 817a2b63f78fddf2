"""The config file's sections that are no single stage's: the data set, training, the search
and the constraints (the stages' own sections are their settings classes, ``config.stages``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # classifier, reconstruction or regression; null: the zoo model's own (a model file: classifier)
    task: str | None = None
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
    # What the recommendation is for (pipeline.formats.targets): any, mcu (integer TFLite that
    # TFLite Micro ran and passed), npu (fully int8 TFLite), phone (TFLite, .ort), pi.
    target: str = "any"
    max_accuracy_drop: float | None = 0.01
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    # A microcontroller target: TFLM's measured tensor arena and the model's flash bytes.
    max_ram_kb: float | None = None
    max_flash_kb: float | None = None
