"""The ``pipeline`` command line: thin Typer commands over the core stage functions."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from edge_runtime.errors import CodedError, Terminated, exit_on_sigterm, filesystem_error
from pipeline.config import Config

app = typer.Typer(
    help="Take a Keras model from training to a device: train → prune → quantize → convert "
         "→ verify → bench → report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# The one source of defaults: the config file's sections (`pipeline run`). Each command's
# options show and use the same values, so a command and its config field cannot disagree.
DEFAULTS = Config()


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Same as --verbose after the command.")] = False,
) -> None:
    """Take a Keras model from training to a device: train → prune → quantize → convert → verify → bench → report."""
    if verbose:
        _show_native_output()


RunOption = Annotated[Optional[Path], typer.Option(
    "--run", help="Run directory to work on (default: runs/latest).")]
UnsafeOption = Annotated[bool, typer.Option(
    "--unsafe", help="Trust code inside the model (Lambda layers, SavedModel graphs) for this "
                     "command only; a run directory never grants it.")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", help="Print only results and errors: no progress, epoch or info lines.")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", help="Also show what TensorFlow, LiteRT and the converters write to stderr "
                      "(hidden by default).")]


def _listed(help_text: str, default: str | None = None):
    """A list option: repeat it, or separate values with commas (or both)."""
    shown = f" (default: {default})" if default is not None else ""
    return typer.Option(help=f"{help_text} Repeatable; commas also separate values{shown}.",
                        show_default=False)


SshOption = Annotated[Optional[list[str]], _listed("Extra ssh option, e.g. -i=KEY or UserKnownHostsFile=FILE.")]
RemoteDirOption = Annotated[str, typer.Option(help="Where the device keeps its edge-runtime venv and jobs.")]


def _items(values: list[str] | None, option: str, *, keyed: bool = False) -> list[str]:
    """The values of a list option, split at commas. For KEY=VALUE options (``keyed``) a comma
    starts a new item only before another KEY=, so a value may hold commas. An option given
    with nothing in it is a mistake, not a request for the default."""
    separator = r",(?=\s*[\w.\-]+=)" if keyed else ","
    items = [item.strip() for value in values or [] for item in re.split(separator, value) if item.strip()]
    if values and not items:
        from pipeline.errors import UsageError

        raise UsageError(f"{option} was given without a value")
    return items


def _show_native_output() -> None:
    from edge_runtime.quiet import VERBOSE_ENV

    os.environ[VERBOSE_ENV] = "1"


def _setup(quiet: bool = False, verbose: bool = False) -> None:
    if verbose:
        _show_native_output()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("pipeline").setLevel(logging.WARNING if quiet else logging.INFO)
    for chatty in ("tf2onnx", "absl", "tensorflow"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def command(name: str | None = None):
    """Register a command with every command's conventions: --quiet/--verbose, --unsafe for
    this command only, and one ``error:`` line with a documented exit code, not a traceback."""
    def register(function):
        @functools.wraps(function)
        def conventions(*args, **kwargs):
            _setup(kwargs.get("quiet", False), kwargs.get("verbose", False))
            with _errors_to_exit_codes(), _trust(kwargs.get("unsafe", False)):
                return function(*args, **kwargs)
        return app.command(name)(conventions)
    return register


@contextlib.contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """One clear line on stderr and a documented exit code instead of a traceback."""
    try:
        yield
    except CodedError as exc:  # the pipeline's, and the device package's met in verify/bench
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # a path too long, a full disk, a permission: the user's to fix
        known = filesystem_error(exc)
        if known is None:
            raise
        typer.echo(f"error: {known[0]}", err=True)
        raise typer.Exit(known[1]) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Terminated:
        typer.echo("terminated (SIGTERM)", err=True)
        raise typer.Exit(Terminated.exit_code) from None


def _trust(unsafe: bool):
    from pipeline.modelio import trusting_model_code

    return trusting_model_code(unsafe)


@command()
def train(
    model: Annotated[Optional[str], typer.Option(
        help="Zoo model name (see `pipeline models`) or a .keras/.h5/SavedModel path to "
             f"fine-tune (default: {DEFAULTS.train.model}).", show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="digits, mnist, fashion_mnist, cifar10, npz:PATH, folder:DIR or idx:DIR "
             f"(default: {DEFAULTS.data.dataset}).", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Training epochs (default: the model's recipe, see `pipeline models`).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (default: the recipe's).")] = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help="rmsprop, adam or sgd (default: the recipe's).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(
        help="Initial learning rate (default: the recipe's).")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(
        help="constant, cosine, exponential or plateau (default: the recipe's).")] = None,
    early_stopping: Annotated[Optional[int], typer.Option(
        help="Stop after this many epochs without val_loss improvement (default: off).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(
        help="'balanced' to weight classes by inverse frequency.")] = None,
    augment: Annotated[bool, typer.Option(help="Light image augmentation (random shifts).")] = DEFAULTS.train.augment,
    stream: Annotated[Optional[str], typer.Option(
        help="auto, always or never: feed batches preprocessed from the raw split as they are drawn "
             "(auto: when the training split is over 16 MiB as float32).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help=f"Seed for splits, initialisation and shuffling (default: {DEFAULTS.data.seed}).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to N x N.")] = None,
    mixed_precision: Annotated[bool, typer.Option(
        help="Train in mixed_float16 (for GPUs); the saved model is float32.")] = DEFAULTS.train.mixed_precision,
    distribute: Annotated[Optional[str], typer.Option(
        help="none, mirrored (every visible GPU) or multiworker (TF_CONFIG) "
             f"(default: {DEFAULTS.train.distribute}).")] = None,
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard logs to RUN/logs.")] = False,
    backend: Annotated[Optional[str], typer.Option(
        help="Keras backend: tensorflow, jax or torch (default: $KERAS_BACKEND or tensorflow).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory (default: runs/<model>-<dataset>-<time>).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --run (or runs/latest) from its last checkpoint, with its own "
             "model, data and recipe, up to --epochs.")] = False,
    run: RunOption = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Train a model and start a run directory (model.keras, train.json, manifest.json)."""
    from pipeline.errors import UsageError
    from pipeline.train import TrainConfig, train as run_training

    if run is not None and not resume:
        raise UsageError("--run names the run to --resume; a new run goes to --out DIR")
    options = dict(
        model=model, dataset=dataset, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, learning_rate=learning_rate, lr_schedule=lr_schedule,
        early_stopping=early_stopping, class_weight=class_weight, augment=augment, stream=stream,
        seed=seed, image_size=image_size, mixed_precision=mixed_precision,
        distribute=distribute, tensorboard=tensorboard, unsafe=unsafe, backend=backend)
    given = {name: value for name, value in options.items()
             if value is not None and value is not False}
    result = run_training(TrainConfig(**given), out=run or out, resume=resume, given=set(given),
                          verbose=0 if quiet else 2)
    accuracy = result.metrics["test_accuracy"]
    score = (f"test accuracy {accuracy:.4f}" if accuracy is not None
             else f"test loss {result.metrics['test_loss']:.5f}")
    first, steady = result.metrics["first_epoch_seconds"], result.metrics["samples_per_second"]
    speed = f" (first epoch {first:.1f}s, then {steady:,.0f} samples/s)" if steady else ""
    where = result.run_dir if result.chief else "the chief's run (this worker wrote nothing)"
    typer.echo(f"{score}, {result.metrics['epochs_run']} epochs in "
               f"{result.metrics['train_seconds']:.1f}s{speed} → {where}")


@command("import")
def import_command(
    model: Annotated[Path, typer.Argument(help="Your model: .keras, Keras 2 .h5 or a SavedModel directory.")],
    dataset: Annotated[str, typer.Option(
        help="The data set it was trained for (see `pipeline datasets`).")] = DEFAULTS.data.dataset,
    seed: Annotated[int, typer.Option(help="Seed for the splits.")] = DEFAULTS.data.seed,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to N x N.")] = None,
    val_fraction: Annotated[float, typer.Option(
        help="Share of the training split kept for validation (int8 recovery scores on it).")] = DEFAULTS.data.val_fraction,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory to create (default: runs/<model>-<dataset>-<time>).")] = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Start a run from a model you already have; later stages then work on it."""
    from pipeline.import_model import import_model

    run_dir, metrics = import_model(model, dataset=dataset, seed=seed, image_size=image_size,
                                    val_fraction=val_fraction, unsafe=unsafe, out=out)
    typer.echo(f"test accuracy {metrics['test_accuracy']:.4f} → {run_dir}")


@command()
def prune(
    run: RunOption = None,
    sparsity: Annotated[float, typer.Option(
        help="Fraction of weights (or of channels when structured) to remove; the config "
             "sweeps prune.sparsity, this is its largest value.")] = max(DEFAULTS.prune.sparsity),
    structured: Annotated[bool, typer.Option(
        "--structured/--unstructured",
        help="Remove whole Conv filters / Dense units by L1 norm and rebuild a smaller model, "
             "or zero single weights.")] = DEFAULTS.prune.structured,
    fine_tune_epochs: Annotated[int, typer.Option(
        help="Fine-tuning epochs while/after pruning.")] = DEFAULTS.prune.fine_tune_epochs,
    learning_rate: Annotated[float, typer.Option(
        help="Fine-tuning learning rate (cosine decay).")] = DEFAULTS.prune.learning_rate,
    skip: Annotated[Optional[list[str]], _listed("Layer names to leave dense.")] = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Magnitude pruning (Keras 3 native) → model_pruned.keras and prune.json."""
    from pipeline.prune import PruneOptions, prune as run_prune

    report = run_prune(run, PruneOptions(
        sparsity=sparsity, structured=structured, fine_tune_epochs=fine_tune_epochs,
        learning_rate=learning_rate, skip_layers=_items(skip, "--skip")))
    before, after = report["before"], report["after"]
    typer.echo(f"{report['method']}: sparsity {after['sparsity']:.2%}, params "
               f"{before['params']:,} → {after['params']:,} ({after['nonzero_params']:,} non-zero), "
               f"gzip {before['float32_tflite_gzip_bytes'] / 1024:.0f} → "
               f"{after['float32_tflite_gzip_bytes'] / 1024:.0f} KiB")
    if before["accuracy"] is not None:
        typer.echo(f"accuracy {before['accuracy']:.2%} → {after['accuracy']:.2%}")


@command()
def quantize(
    run: RunOption = None,
    int8: Annotated[bool, typer.Option("--int8", help="Full integer (int8 weights and activations).")] = False,
    float16: Annotated[bool, typer.Option("--float16", help="float16 weights.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic range (int8 weights).")] = False,
    int16x8: Annotated[bool, typer.Option("--int16x8", help="int16 activations, int8 weights.")] = False,
    pruned: Annotated[bool, typer.Option(help="Quantize model_pruned.keras instead of model.keras.")] = False,
    calibration_samples: Annotated[int, typer.Option(
        help="Training samples (seeded) used to calibrate int8/int16x8.")] = DEFAULTS.quantize.calibration_samples,
    calibration_data: Annotated[Optional[Path], typer.Option(
        help="Calibrate on raw samples from this .npy/.npz ('x') instead of the training split.")] = None,
    float_io: Annotated[bool, typer.Option(
        help="Keep float32 input/output on integer models.")] = DEFAULTS.quantize.float_io,
    dynamic_batch: Annotated[bool, typer.Option(help="Keep the batch dimension dynamic (default: 1).")] = False,
    compat: Annotated[Optional[str], typer.Option(
        help="'tflite-runtime': op versions that tflite-runtime 2.14 can load.")] = None,
    recover: Annotated[Optional[bool], typer.Option(
        "--recover/--no-recover",
        help="When int8 fails its gates on the validation split, raise the fewest layers to "
             "int16 activations (float as a last resort) → model_int8_mixed.tflite; --recover "
             "fails (exit 6) if no mix passes. Default (the config's quantize.recover, unset): "
             "try, and only warn.", show_default=False)] = DEFAULTS.quantize.recover,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Post-training quantization to TFLite, builtin ops only [default modes: the config's
    quantize.modes]."""
    from pipeline.quantize import QuantizeOptions, quantize as run_quantize

    modes = [m for m, on in (("int8", int8), ("float16", float16), ("dynamic", dynamic),
                             ("int16x8", int16x8)) if on] or list(DEFAULTS.quantize.modes)
    report = run_quantize(run, QuantizeOptions(
        modes=modes, pruned=pruned, calibration_samples=calibration_samples,
        float_io=float_io, dynamic_batch=dynamic_batch, compat=compat,
        calibration_data=str(calibration_data) if calibration_data else None, recover=recover))
    _echo_artifacts(report, [*modes, "int8_mixed"])
    if report.get("recovery"):
        typer.echo(_describe_recovery(report["recovery"]))


def _describe_recovery(recovery: dict) -> str:
    full = recovery.get("full_int8") or {}
    agreement = full.get("top1_agreement")
    before = "" if agreement is None else f" (validation agreement {agreement:.2%})"
    if recovery.get("status") == "recovered":
        raised = recovery["raised"]
        kinds = " / ".join(sorted({layer["precision"] for layer in raised})) or "none"
        after = recovery["validation"]["top1_agreement"]
        return (f"int8 recovery: {len(raised)} of {recovery['raisable_layers']} layers raised "
                f"({kinds}){before} → {recovery['artifact']}"
                + ("" if after is None else f" ({after:.2%})"))
    if recovery.get("needed") is False:
        return f"int8 recovery: not needed{before}, full int8 left alone"
    return f"int8 recovery: {recovery.get('status')}{before}"


@command()
def convert(
    run: RunOption = None,
    to: Annotated[Optional[list[str]], _listed(
        "Targets: tflite, onnx, ort (ONNX Runtime Mobile: the run's ONNX artifacts as .ort).",
        ",".join(DEFAULTS.convert.targets))] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (tf2onnx 1.17 supports up to 18).")] = DEFAULTS.convert.opset,
    pruned: Annotated[bool, typer.Option(help="Convert model_pruned.keras.")] = False,
    calibration_samples: Annotated[int, typer.Option(
        help="Training samples (seeded) for ONNX Runtime's int8 calibration.")] = DEFAULTS.quantize.calibration_samples,
    calibration_data: Annotated[Optional[Path], typer.Option(
        help="Raw samples (.npy, or .npz with 'x', e.g. uint8 pixels) to calibrate the int8 ONNX "
             "on, instead of the training split (use the same file as quantize).")] = None,
    int8_onnx: Annotated[bool, typer.Option(help="Also write int8 ONNX (QDQ, and from the int8 TFLite).")] = True,
    recover: Annotated[Optional[bool], typer.Option(
        "--recover/--no-recover", show_default=False,
        help="When the QDQ int8 ONNX fails its gates on the validation split, leave the fewest nodes "
             "float → model_int8_mixed.onnx; --recover fails (exit 6) when no mix passes (default: try, "
             "and warn).")] = DEFAULTS.quantize.recover,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Float32 TFLite and ONNX, plus int8 ONNX (ONNX Runtime QDQ and tf2onnx from int8 TFLite)."""
    from pipeline.convert import ConvertOptions, convert as run_convert

    report = run_convert(run, ConvertOptions(
        targets=_items(to, "--to") if to else list(DEFAULTS.convert.targets), opset=opset, pruned=pruned,
        calibration_samples=calibration_samples,
        calibration_data=str(calibration_data) if calibration_data else None, int8_onnx=int8_onnx,
        recover=recover))
    _echo_artifacts(report, None)
    if (report.get("recovery") or {}).get("needed"):
        typer.echo(_describe_recovery(report["recovery"]))


@command()
def verify(
    run: RunOption = None,
    artifact: Annotated[Optional[list[str]], _listed(
        "Artifacts to verify (names in the run, or paths).", "every artifact in the run")] = None,
    gate: Annotated[Optional[list[str]], _listed(
        "Override a gate: KIND.METRIC=VALUE, e.g. quantized.metric_drop=0.02.")] = None,
    explain: Annotated[bool, typer.Option(help="Name the layers that lose most to quantization.")] = False,
    strict: Annotated[bool, typer.Option(
        help="Fail (exit 6) on an inconclusive gate too: one whose 95% interval straddles its "
             "threshold, so the test split is too small to tell.")] = False,
    ram_kb: Annotated[Optional[float], typer.Option(
        help="Microcontroller RAM budget: fail an integer TFLite artifact whose TFLite Micro "
             "tensor arena (measured) is larger (default: the config's constraints.max_ram_kb, "
             "unset).")] = DEFAULTS.constraints.max_ram_kb,
    flash_kb: Annotated[Optional[float], typer.Option(
        help="Microcontroller flash budget for the model's bytes (default: the config's "
             "constraints.max_flash_kb, unset).")] = DEFAULTS.constraints.max_flash_kb,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Accuracy parity of every artifact against Keras on the test split; failing gates exit 6."""
    from pipeline.errors import ParityError
    from pipeline.fsutil import read_json
    from pipeline.rundir import resolve_run
    from pipeline.verify import VerifyOptions, parse_gate, verify as run_verify

    overrides: dict[str, dict[str, float]] = {}
    for text in _items(gate, "--gate", keyed=True):
        kind, metric, value = parse_gate(text)
        overrides.setdefault(kind, {})[metric] = value
    options = VerifyOptions(artifacts=_items(artifact, "--artifact") or None, gates=overrides,
                            explain=explain, strict=strict, max_ram_kb=ram_kb, max_flash_kb=flash_kb)
    try:
        report = run_verify(run, options)
    except ParityError:
        report = read_json(resolve_run(run) / "verify.json")
        _print_verify_table(report)
        _warn_inconclusive(report, strict)
        raise
    _print_verify_table(report)
    _warn_inconclusive(report, strict)


def _warn_inconclusive(report: dict, strict: bool) -> None:
    found = report.get("inconclusive") or []
    if found and not strict:
        typer.echo(f"warning: {len(found)} gate(s) inconclusive on {report['test_samples']} test samples "
                   f"(the point estimate decided; --strict fails them): {'; '.join(found)}", err=True)


def _describe_micro(micro: dict) -> str:
    """One line for a microcontroller check: TFLM's answers and memory, or why it did not run."""
    if "skipped" in micro or "error" in micro:
        return f"TFLite Micro: {micro.get('skipped') or micro['error']}"
    parts = []
    if micro["accuracy"] is not None:
        parts.append(f"accuracy {micro['accuracy']:.2%}, top-1 agreement {micro['top1_agreement']:.2%} "
                     f"with LiteRT's reference kernels ({micro['top1_agreement_xnnpack']:.2%} with XNNPACK)")
    parts.append(f"largest output difference {micro['max_output_difference']:g} "
                 f"{micro['output_difference_unit']}")
    parts.append(f"arena {micro['arena_bytes']:,} B, flash {micro['flash_bytes']:,} B")
    return "TFLite Micro: " + "; ".join(parts)


def _interval(ci95, negate: bool = False) -> str:
    if not ci95:
        return "-"
    low, high = (0.0 - ci95[1], 0.0 - ci95[0]) if negate else ci95
    return f"[{low:+.4f}, {high:+.4f}]" if negate else f"[{low:.4f}, {high:.4f}]"


def _print_verify_table(report: dict) -> None:
    metric = report["metric"]
    typer.echo(f"{'artifact':28s} {'mode':8s} {metric:>10s} {'95% interval':>15s} {'Δ':>8s} {'95% interval':>17s} "
               f"{'agree':>7s} {'95% interval':>15s} {'max err':>9s} {'SQNR dB':>8s}  gates (? inconclusive)")
    for row in report["artifacts"]:
        agreement = "-" if row["top1_agreement"] is None else f"{row['top1_agreement']:.2%}"
        gates = " ".join(f"{'?' if g.get('verdict') == 'inconclusive' else '✓' if g['passed'] else '✗'}{name}"
                         for name, g in row["gates"].items())
        typer.echo(f"{row['artifact']:28s} {row['mode']:8s} {row['metric_value']:10.4f} "
                   f"{_interval(row.get('accuracy_ci95')):>15s} {0.0 - row['metric_drop']:+8.4f} "
                   f"{_interval(row.get('metric_drop_ci95'), negate=True):>17s} {agreement:>7s} "
                   f"{_interval(row.get('top1_agreement_ci95')):>15s} {row['max_abs_error']:9.2e} "
                   f"{row['sqnr_db']:8.1f}  {gates}")
        for layer in (row.get("explain") or {}).get("worst_layers", []):
            measure = ", ".join(f"{k} {v:.3g}" for k, v in layer.items()
                                if k in ("rmse_over_scale", "sqnr_db") and v is not None)
            typer.echo(f"    worst layer {layer['layer']} ({measure})")
        for hint in (row.get("explain") or {}).get("hints", []):
            typer.echo(f"    hint: {hint}")
        if row.get("micro"):
            typer.echo(f"    {_describe_micro(row['micro'])}")
    for pair in report.get("cross_runtime", []):
        typer.echo(f"{pair['tflite']} vs {pair['onnx']}: top-1 agreement {pair['top1_agreement']:.2%}, "
                   f"max diff {pair['max_abs_difference']:.2e}")
    typer.echo("verify: " + ("passed" if report["passed"] else "FAILED"))


@command()
def bench(
    run: RunOption = None,
    threads: Annotated[Optional[list[str]], _listed(
        "Thread counts to sweep, e.g. 1,2,4.", ",".join(map(str, DEFAULTS.bench.threads)))] = None,
    runs: Annotated[int, typer.Option(help="At least this many timed runs per artifact.")] = DEFAULTS.bench.runs,
    warmup: Annotated[int, typer.Option(help="Warm-up runs before timing.")] = DEFAULTS.bench.warmup,
    min_seconds: Annotated[float, typer.Option(
        help="Keep timing for at least this long.")] = DEFAULTS.bench.min_seconds,
    xnnpack: Annotated[bool, typer.Option(help="Use LiteRT's XNNPACK delegate.")] = True,
    artifact: Annotated[Optional[list[str]], _listed(
        "Artifacts to time (names in the run).", "every artifact in the run")] = None,
    device: Annotated[Optional[str], typer.Option(help="ssh://user@host[:port] to benchmark on a device.")] = None,
    ssh_option: SshOption = None, remote_dir: RemoteDirOption = "~/.edge-runtime",
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Latency of every artifact (p50/p90/p99 per backend and thread count) → bench.json."""
    from pipeline.bench import BenchOptions, bench as run_bench
    from pipeline.errors import UsageError

    try:
        thread_counts = [int(t) for t in _items(threads, "--threads")] or list(DEFAULTS.bench.threads)
    except ValueError:
        raise UsageError(f"--threads takes integers, got '{','.join(threads or [])}'") from None
    report = run_bench(run, BenchOptions(
        threads=thread_counts, runs=runs, warmup=warmup, min_seconds=min_seconds, xnnpack=xnnpack,
        artifacts=_items(artifact, "--artifact") or None, device=device,
        ssh_options=_ssh_options(_items(ssh_option, "--ssh-option", keyed=True)), remote_root=remote_dir))
    where = report["device"].get("cpu_model") or report["device"].get("machine")
    typer.echo(f"device: {report['device']['location']} ({where})")
    for row in report["results"]:
        typer.echo(f"{row['artifact']:32s} {row['backend']:12s} threads {row['threads']}: "
                   f"p50 {row['p50_ms']:.3f} ms  p90 {row['p90_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms")


def _ssh_options(values: list[str]) -> list[str]:
    options = []
    for value in values:
        if value.startswith("-i="):
            options += ["-i", value[3:]]
        else:
            options += ["-o", value]
    return options


@command()
def export(
    run: RunOption = None,
    c_array: Annotated[bool, typer.Option(
        "--c-array", help="Write model_data.h / model_data.cc: the model as an aligned C array "
                          "with its length, the measured TFLite Micro arena, input/output "
                          "quantization and class names.")] = False,
    artifact: Annotated[str, typer.Option(
        help="The integer TFLite model to export (a name in the run, or a path).")] = "model_int8.tflite",
    out: Annotated[Optional[Path], typer.Option(help="Where to write (default: RUN/c_array).")] = None,
    symbol: Annotated[str, typer.Option(help="The array's C name.")] = DEFAULTS.export.symbol,
    metadata: Annotated[bool, typer.Option(
        "--metadata/--no-metadata", help="Keep the TFLite Metadata and packed labels in the array "
                                         "(default: left out, TFLite Micro does not read them).")] = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Export an artifact for a microcontroller project (TensorFlow Lite for Microcontrollers)."""
    from pipeline.c_export import export_c_array
    from pipeline.errors import UsageError
    from pipeline.rundir import resolve_run

    if not c_array:
        raise UsageError("choose what to export: --c-array")
    run_dir = resolve_run(run)
    facts = export_c_array(run_dir, artifact, out or run_dir / "c_array", symbol=symbol, metadata=metadata)
    left_out = (f" ({facts['metadata_bytes_left_out']:,} bytes of metadata left out)"
                if facts["metadata_bytes_left_out"] else "")
    typer.echo(f"{facts['artifact']}: {facts['length']:,} bytes{left_out}, tensor arena {facts['arena_bytes']:,} "
               f"bytes → {', '.join(facts['files'][:2])}")


@command()
def search(
    model: Annotated[str, typer.Option(
        help="Zoo model whose variants to search (mnist_cnn, mlp, resnet8, ds_cnn, mobilenet_v1).")] = "mnist_cnn",
    dataset: Annotated[str, typer.Option(help="The data set (see `pipeline datasets`).")] = DEFAULTS.data.dataset,
    trials: Annotated[int, typer.Option(
        help="Trials in all (a resumed search counts its finished ones).")] = DEFAULTS.search.trials,
    time_limit: Annotated[Optional[float], typer.Option(
        help="Start no trial after this many seconds (default: no limit).")] = DEFAULTS.search.time_limit_s,
    epochs: Annotated[int, typer.Option(help="Training epochs per trial.")] = DEFAULTS.search.epochs,
    space: Annotated[Optional[list[str]], _listed(
        "Values to try for a hyperparameter, replacing the model's: NAME=V1,V2, e.g. filters=8,16-32 or "
        "learning_rate=0.001,0.003. Names: filters, dense, stem_pool (mnist_cnn), hidden (mlp), filters "
        "(resnet8), width, blocks (ds_cnn), alpha (mobilenet_v1), and for all: learning_rate, optimizer, "
        "batch_size, sparsity, quantization.")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(
        help="Budget: int8 p50 latency where the trials are timed (default: none).")] = DEFAULTS.constraints.max_latency_ms,
    max_latency_ratio: Annotated[Optional[float], typer.Option(
        help="Budget: int8 p50 as a fraction of the model as it comes, both timed here at the start, "
             "e.g. 0.33 (instead of --max-latency-ms).")] = DEFAULTS.search.max_latency_ratio,
    max_size_kb: Annotated[Optional[float], typer.Option(
        help="Budget: artifact size (default: none).")] = DEFAULTS.constraints.max_size_kb,
    max_ram_kb: Annotated[Optional[float], typer.Option(
        help="Budget: TFLite Micro tensor arena, measured (default: none).")] = DEFAULTS.constraints.max_ram_kb,
    bench_seconds: Annotated[float, typer.Option(
        help="Timing per latency measurement.")] = DEFAULTS.search.bench_seconds,
    rescore: Annotated[int, typer.Option(
        help="Up to this many fitting trials within the validation noise of the best are re-scored by "
             "3-fold cross-validation over train+validation before the winner is chosen (0: rank on "
             "validation alone).")] = DEFAULTS.search.rescore,
    device: Annotated[Optional[str], typer.Option(
        help="ssh://user@host[:port]: time every trial on this device (default: this machine).")] = DEFAULTS.search.device,
    ssh_option: SshOption = None, remote_dir: RemoteDirOption = "~/.edge-runtime",
    seed: Annotated[int, typer.Option(help="Seed for splits and initialisation.")] = DEFAULTS.data.seed,
    out: Annotated[Optional[Path], typer.Option(
        help="Search directory; an existing one resumes (default: runs/search-<model>-<dataset>).")] = None,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Hardware-aware search: the most accurate model variant whose int8 artifact fits the
    budgets, measured where it will run → search.json, search_report.md and a run directory."""
    from pipeline.rundir import DEFAULT_RUNS_ROOT, safe_name
    from pipeline.search import SearchOptions, search as run_search

    options = SearchOptions(model=model, dataset=dataset, trials=trials, time_limit_s=time_limit,
                            epochs=epochs, space=_space(_items(space, "--space", keyed=True)),
                            max_latency_ms=max_latency_ms, max_size_kb=max_size_kb, max_ram_kb=max_ram_kb,
                            max_latency_ratio=max_latency_ratio, bench_seconds=bench_seconds, rescore=rescore, device=device, seed=seed,
                            ssh_options=_ssh_options(_items(ssh_option, "--ssh-option", keyed=True)),
                            remote_root=remote_dir)
    summary = run_search(options, out or DEFAULT_RUNS_ROOT / f"search-{model}-{safe_name(dataset)}")
    if summary.get("worker"):
        typer.echo("worker: trials done")
        return
    _print_search(summary)


def _space(items: list[str]) -> dict[str, list]:
    """``NAME=V1,V2`` items as {name: [values]}: numbers where they parse, else strings."""
    from pipeline.config import parse_value
    from pipeline.errors import UsageError

    space: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--space takes NAME=V1,V2, got '{item}'")
        values = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if name.strip() in space:  # --space lr=1e-3 --space lr=3e-3: both, in order, once each
            values = [*space[name.strip()], *(v for v in values if v not in space[name.strip()])]
        space[name.strip()] = values
    return space


def _print_search(summary: dict) -> None:
    done = [t for t in summary["trials"] if t["status"] == "COMPLETED"]
    baseline = summary["baseline"]
    typer.echo(f"{len(done)} trials in {summary['search_seconds']:.0f}s; baseline "
               f"{summary['options']['model']} int8: test accuracy {baseline['test_accuracy']:.2%}, "
               f"p50 {baseline['p50_ms']:.4f} ms")
    relative = summary.get("relative_budget")
    if relative:
        typer.echo(f"latency budget: {relative['ratio']:g} × {summary['options']['model']}'s untrained p50 "
                   f"{relative['reference_p50_ms']:.4f} ms = {relative['max_latency_ms']:.4f} ms")
    best = summary.get("best")
    if best:
        from pipeline.search import choice_text

        typer.echo(f"best: trial {best['trial']}, test accuracy {best['test_accuracy']:.2%}, p50 "
                   f"{best['p50_ms']:.4f} ms (×{summary['comparison']['p50_ratio']:.2f}) → {best['run_dir']}")
        test = summary["comparison"]["int8_test"]
        typer.echo(f"chosen: {choice_text(summary)}; int8 test accuracy {test['best']['accuracy']:.2%} vs the "
                   f"baseline's {test['baseline']['accuracy']:.2%}: {100 * test['difference']:+.2f} points "
                   f"[{100 * test['difference_ci95'][0]:+.2f}, {100 * test['difference_ci95'][1]:+.2f}]")
    else:
        fastest = summary["screened"].get("fastest_p50_ms")
        typer.echo("best: no trial fits the budgets" + (
            f" (the fastest architecture of the space: p50 {fastest:.4f} ms untrained)" if fastest else ""))


@command("run")
def run_all(
    config: Annotated[Optional[Path], typer.Argument(help="YAML or TOML config (default: built-in defaults).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override any config field: SECTION.FIELD=VALUE, e.g. train.epochs=5, or a "
                      "nested one, e.g. verify.gates.quantized.metric_drop=0.02. Repeatable; "
                      "commas also separate values.", show_default=False)] = None,
    force: Annotated[Optional[list[str]], _listed("Rerun this stage even if cached.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory (default: runs/pipeline-<model>-<dataset>).")] = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """The whole pipeline from one config: train → prune → quantize → convert → verify → bench → report."""
    logging.getLogger("pipeline").setLevel(logging.WARNING)  # the stage lines say what happens
    from pipeline.config_check import load_config
    from pipeline.orchestrator import run as run_pipeline

    resolved = load_config(config, _items(set_, "--set", keyed=True))
    result = run_pipeline(resolved, out=out, force=_items(force, "--force"),
                          progress=None if quiet else _progress)
    typer.echo(f"recommended: {result.recommended or 'none meets the constraints'}")
    typer.echo(f"report: {result.report}")


def _progress(stage: str, status: str, seconds: float) -> None:
    if status == "start":
        typer.echo(f"▶ {stage} …", err=True)
    else:
        mark = "✓" if status == "ran" else "•"
        typer.echo(f"{mark} {stage:9s} {seconds:6.1f}s{'' if status == 'ran' else '  (cached)'}", err=True)


@command()
def report(
    run_dir: Annotated[Optional[Path], typer.Argument(hidden=True)] = None,  # older scripts: same as --run
    run: RunOption = None,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Rebuild report.md / report.html of a run from its JSON files."""
    from pipeline.errors import UsageError
    from pipeline.report import build_report
    from pipeline.rundir import resolve_run

    if run_dir is not None and run is not None and run_dir != run:
        raise UsageError(f"two run directories given ({run_dir} and --run {run}): pass one")
    run_path = resolve_run(run or run_dir)
    summary = build_report(run_path)
    typer.echo(f"recommended: {summary['recommended'] or 'none meets the constraints'}")
    typer.echo(f"report: {run_path / 'report.html'}")


def _echo_artifacts(report: dict, modes) -> None:
    for name, row in report["artifacts"].items():
        if modes is None or row.get("mode") in modes:
            typer.echo(f"{name:32s} {row['size_bytes'] / 1024:9.1f} KiB  sha256 {row['sha256'][:12]}")


@command("models")
def list_models(quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """List the model zoo, each with its default training recipe."""
    import models

    for name in models.model_names():
        spec = models.get_model_spec(name)
        recipe = spec.full_recipe()
        typer.echo(f"{name:14s} {spec.task:12s} {spec.summary}")
        typer.echo(f"{'':27s} recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
                   f"{recipe['optimizer']} {recipe['learning_rate']:g}, {recipe['lr_schedule']} schedule")


@command("datasets")
def list_datasets(quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """List the data sets."""
    from pipeline.data import loaders

    for loader in loaders():
        label = f"{loader.name}:PATH" if loader.takes_path else loader.name
        typer.echo(f"{label:14s} {loader.help}")


def main() -> None:
    """The ``pipeline`` script: Click's own usage errors (unknown option, a value that is not a
    number) become one ``error:`` line and exit 2, like every other mistake."""
    exit_on_sigterm()
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise  # not Click's: a bug, keep the traceback
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.ctx.get_help() if getattr(exc, "ctx", None) else exc.format_message())
            raise SystemExit(0) from None
        message = " ".join(exc.format_message().split())
        command = getattr(getattr(exc, "ctx", None), "command_path", "pipeline")
        typer.echo(f"error: {command}: {message}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
