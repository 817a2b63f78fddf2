"""One settings class per stage. Each is the config file's section of that stage (its config
fields, with their defaults: the one source of every default) plus the per-command fields a
command line or the orchestrator gives for one invocation; ``validate()`` says what the stage
accepts. ``pipeline run`` hands each stage its section of the config, completed per variant;
``pipeline COMMAND`` builds the same class from its options."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edge_runtime.bench import DEFAULT_MIN_SECONDS
from pipeline.config.devices import DEFAULT_REMOTE_ROOT
from pipeline.config.fields import per_command
from pipeline.config.sections import DISTRIBUTE, DataSection, TrainSection
from pipeline.core.errors import UsageError, unknown_name
from pipeline.formats.onnx import DEFAULT_OPSET

# quantize --compat: op versions an older runtime loads.
COMPAT = ("tflite-runtime",)


@dataclass
class TrainOptions(TrainSection, DataSection):
    """``train``: the config file's ``data`` and ``train`` sections (one definition, so the CLI
    and the config file cannot drift) plus the command's switches."""

    tensorboard: bool = per_command(False)
    unsafe: bool = per_command(False)

    def with_recipe(self) -> "TrainOptions":
        """A copy whose unset training fields come from the model's default recipe."""
        from pipeline.core.recipes import recipe_for

        recipe = recipe_for(self.model)
        return dataclasses.replace(self, **{name: recipe[name] for name in recipe
                                            if getattr(self, name) is None})

    def validate(self) -> None:
        from pipeline.core.backend import BACKENDS
        from pipeline.core.limits import check
        from pipeline.core.recipes import LR_SCHEDULES, OPTIMIZERS
        from pipeline.data.streaming import STREAM_MODES

        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                              ("distribute", DISTRIBUTE), ("stream", STREAM_MODES)):
            if getattr(self, name) not in allowed:
                raise unknown_name(name.replace("_", "-"), getattr(self, name), allowed)
        if self.class_weight not in (None, "balanced"):
            raise unknown_name("class-weight", self.class_weight, ["balanced"])
        for name in ("epochs", "batch_size", "learning_rate", "early_stopping", "seed",
                     "image_size", "val_fraction", "test_fraction"):
            check(name, getattr(self, name))
        if self.backend is not None and self.backend not in BACKENDS:
            raise unknown_name("backend", self.backend, BACKENDS)
        if self.tensorboard and self.backend not in (None, "tensorflow"):
            raise UsageError("--tensorboard writes TensorFlow summaries: use it with --backend tensorflow")
        if self.distribute == "multiworker" and self.backend == "torch":
            raise UsageError("--distribute multiworker runs on tensorflow (TF_CONFIG) or jax "
                             "(KERAS_DISTRIBUTION_*), not torch")


@dataclass
class PruneOptions:
    """``prune``. The config sweeps ``sparsity`` (each value a variant, 0 the unpruned model);
    the stage prunes to the largest (a number is a sweep of one)."""

    sparsity: list[float] = field(default_factory=lambda: [0.0, 0.5])
    structured: bool = True
    fine_tune_epochs: int = 8
    learning_rate: float = 1e-3
    batch_size: int = per_command(32)
    skip_layers: list[str] = per_command(default_factory=list)

    def __post_init__(self):
        if isinstance(self.sparsity, (int, float)) and not isinstance(self.sparsity, bool):
            self.sparsity = [float(self.sparsity)]

    @property
    def target_sparsity(self) -> float:
        return max(self.sparsity) if self.sparsity else float("nan")

    def validate(self) -> None:
        from pipeline.core.limits import check

        if not 0.0 < self.target_sparsity < 1.0:  # NaN fails this too
            raise UsageError(f"--sparsity must lie strictly between 0 and 1, got {self.target_sparsity}")
        check("fine_tune_epochs", self.fine_tune_epochs)
        check("learning_rate", self.learning_rate)


ENGINES = ("litert-quantizer", "converter")


@dataclass
class QuantizeOptions:
    """``quantize``: one TFLite artifact per mode."""

    modes: list[str] = field(default_factory=lambda: ["int8", "float16", "dynamic"])
    calibration_samples: int = 300
    # raw samples (.npy / .npz "x") for the int8 TFLite and ONNX, instead of the training split
    calibration_data: str | None = None
    float_io: bool = False
    # int8 that fails its gates on the validation split: raise the fewest layers' precision
    # (model_int8_mixed.tflite). null: try, warn if no mix passes; true: insist; false: never.
    recover: bool | None = None
    # int8 also by quantization-aware training (model_int8_qat.tflite): the model fine-tuned
    # with fake quantization for qat_epochs (early-stopped on validation) at qat_learning_rate.
    qat: bool = False
    qat_epochs: int = 3
    qat_learning_rate: float = 1e-4
    # The target runs integer kernels only (a microcontroller, an NPU): where full int8 fails
    # its gates on the validation split, recovery trains the QAT model instead of raising layers.
    integer_only: bool = False
    # Who quantizes: LiteRT Quantizer (its recipes on the float32 .tflite) or TensorFlow's
    # converter (what LiteRT's documentation calls legacy; kept to compare,
    # benchmarks/quantizer_engines.py). An artifact asked for with one of the converter's options
    # (float_io for int8/int16x8, dynamic_batch, compat) is the converter's either way.
    engine: str = "litert-quantizer"
    # The static modes' activation ranges (pipeline.formats.calibration): minmax, percentile,
    # mse, or auto (each built, the closest to Keras on the validation split kept, by a margin).
    calibration: str = "minmax"
    pruned: bool = per_command(False)
    dynamic_batch: bool = per_command(False)
    compat: str | None = per_command(None)
    gates: dict[str, dict[str, float]] = per_command(default_factory=dict)  # verify's overrides

    def engine_for(self, mode: str) -> str:
        """Who makes ``mode``'s artifact: LiteRT Quantizer for the modes it has recipes for,
        unless ``engine`` is the converter or one of the converter's options is asked for."""
        from pipeline.formats.kinds import quant_mode
        from pipeline.formats.litert_quantizer import LITERT_ONLY

        if mode in LITERT_ONLY:
            return "litert-quantizer"
        if self.engine == "converter" or self.dynamic_batch or self.compat is not None:
            return "converter"
        return "converter" if self.float_io and quant_mode(mode).needs_calibration else "litert-quantizer"

    def validate(self) -> None:
        from pipeline.core.limits import check
        from pipeline.formats.kinds import quant_mode

        if not self.modes:
            raise UsageError("choose at least one mode: --int8, --float16, --dynamic or --int16x8")
        for mode in self.modes:
            quant_mode(mode)
        if self.compat is not None and self.compat not in COMPAT:
            raise unknown_name("--compat target", self.compat, COMPAT)
        check("calibration_samples", self.calibration_samples)
        if self.engine not in ENGINES:
            raise unknown_name("--engine", self.engine, ENGINES)
        from pipeline.formats.calibration import CHOICES
        from pipeline.formats.litert_quantizer import LITERT_ONLY

        if self.calibration not in CHOICES:
            raise unknown_name("--calibration", self.calibration, CHOICES)
        by_litert = [m for m in self.modes if m in LITERT_ONLY]
        converter_options = [flag for flag, on in (("--float-io", self.float_io),
                                                   ("--dynamic-batch", self.dynamic_batch),
                                                   ("--compat", self.compat is not None)) if on]
        if self.calibration != "minmax" and any(quant_mode(m).needs_calibration for m in self.modes):
            if self.engine == "converter" or converter_options:
                who = "--engine converter" if self.engine == "converter" else ", ".join(converter_options)
                raise UsageError(f"--calibration {self.calibration} is LiteRT Quantizer's; {who} asks for "
                                 "TensorFlow's converter, which calibrates by min-max only")
        refused = [flag for flag in converter_options if flag != "--float-io"]
        if by_litert and refused:
            raise UsageError(f"{', '.join(refused)}: the converter's options; {by_litert[0]} (LiteRT "
                             "Quantizer's) quantizes the batch-1 float32 model as its recipes do")
        if self.qat:
            if "int8" not in self.modes:
                raise UsageError("--qat makes a fully integer model: add --int8")
            check("qat_epochs", self.qat_epochs, label="--qat-epochs")
            check("qat_learning_rate", self.qat_learning_rate, label="--qat-learning-rate")
        if self.integer_only:
            if "int8" not in self.modes:
                raise UsageError("--integer-only recovers a full int8 model: add --int8")
            if self.recover is False:
                raise UsageError("--integer-only recovers a failing int8 model by QAT, --no-recover "
                                 "forbids recovery: choose one")
            check("qat_epochs", self.qat_epochs, label="--qat-epochs")
            check("qat_learning_rate", self.qat_learning_rate, label="--qat-learning-rate")


@dataclass
class ConvertOptions:
    """``convert``: float32 TFLite and ONNX, int8 ONNX, ``.ort``. Its calibration and recovery
    are ``quantize``'s (the orchestrator gives them; a command line has its own flags)."""

    targets: list[str] = field(default_factory=lambda: ["tflite", "onnx"])
    opset: int = DEFAULT_OPSET
    pruned: bool = per_command(False)
    calibration_samples: int = per_command(QuantizeOptions.calibration_samples)
    calibration_data: str | None = per_command(None)  # raw samples (.npy / .npz "x")
    int8_onnx: bool = per_command(True)
    # When the QDQ int8 ONNX fails its gates on the validation split, leave the fewest nodes
    # float (model_int8_mixed.onnx): None tries and warns, True insists, False never tries.
    recover: bool | None = per_command(QuantizeOptions.recover)
    # No node left float either: the int8 ONNX of an integer-only target is the QAT one.
    integer_only: bool = per_command(QuantizeOptions.integer_only)
    gates: dict[str, dict[str, float]] = per_command(default_factory=dict)  # verify's overrides

    def validate(self) -> None:
        from pipeline.core.limits import check
        from pipeline.formats.kinds import TARGETS
        from pipeline.formats.onnx import check_opset

        if not self.targets:
            raise UsageError("--to needs at least one of: tflite, onnx, ort")
        for target in self.targets:
            if target not in TARGETS:
                raise unknown_name("conversion target", target, TARGETS)
        check_opset(self.opset)
        check("calibration_samples", self.calibration_samples)


@dataclass
class BenchOptions:
    """``bench``: latency of every artifact, here and on each of ``devices``."""

    threads: list[int] = field(default_factory=lambda: [1])
    runs: int = 100
    warmup: int = 20
    min_seconds: float = DEFAULT_MIN_SECONDS  # as `edge-runtime bench`
    devices: list[str] = field(default_factory=list)
    xnnpack: bool = per_command(True)
    artifacts: list[str] | None = per_command(None)
    device: str | None = per_command(None)  # the one this invocation times on (None: here)
    ssh_options: list[str] = per_command(default_factory=list)
    remote_root: str = per_command(DEFAULT_REMOTE_ROOT)
    output: str = per_command("bench.json")

    def validate(self) -> None:
        from pipeline.config.devices import check_remote_dir, parse_device
        from pipeline.core.limits import check

        if not self.threads:
            raise UsageError("--threads takes positive integers, e.g. 1,2,4")
        for threads in self.threads:
            check("threads", threads)
        for name in ("runs", "warmup", "min_seconds"):
            check(name, getattr(self, name))
        if self.device is not None:
            parse_device(self.device)
            check_remote_dir(self.remote_root)


@dataclass
class ExportOptions:
    """``export``: an integer TFLite model as C source for a TFLite Micro project."""

    # pipeline run: write c_array/model_data.{h,cc}: the recommended artifact when TFLite Micro
    # runs it, else the best fitting integer one, as C/C++ source for a TFLite Micro project.
    c_array: bool = False
    symbol: str = "g_model_data"  # the array's C name
    # a name in the run or one of its variants, or a path; None: the report's pick for a board
    artifact: str | None = per_command(None)
    out_dir: str | None = per_command(None)            # default: RUN/c_array
    metadata: bool = per_command(False)                # keep the TFLite Metadata in the array
    samples: int = per_command(0)                      # raw test samples + labels for edge-runtime

    def validate(self) -> None:
        from pipeline.core.limits import check
        from pipeline.formats.c_array import check_symbol

        if not self.c_array and not self.samples:
            raise UsageError("choose what to export: --c-array, --samples N or both")
        check("export_samples", self.samples, label="--samples")
        check_symbol(self.symbol)
