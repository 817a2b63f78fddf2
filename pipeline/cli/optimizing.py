"""``pipeline prune``, ``quantize`` and ``convert``: the commands that make a run's model smaller
and write its artifacts."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import DEFAULTS, QuietOption, RunOption, UnsafeOption, VerboseOption, _items, _listed, command


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
    from pipeline.config.stages import PruneOptions
    from pipeline.optimizing.prune import prune as run_prune

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
    elif isinstance(before.get("test_metric"), dict):
        metric, low, high = after["test_metric"]["metric"], *after["test_metric"]["ci95"]
        typer.echo(f"test {metric} {before['test_metric']['value']:.4f} → {after['test_metric']['value']:.4f} "
                   f"(95% interval {low:.4f} to {high:.4f})")


@command()
def quantize(
    run: RunOption = None,
    int8: Annotated[bool, typer.Option("--int8", help="Full integer (int8 weights and activations).")] = False,
    float16: Annotated[bool, typer.Option("--float16", help="float16 weights.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic range (int8 weights).")] = False,
    int16x8: Annotated[bool, typer.Option("--int16x8", help="int16 activations, int8 weights.")] = False,
    weight_only_int8: Annotated[bool, typer.Option(
        "--weight-only-int8", help="int8 weights, float computation (LiteRT Quantizer).")] = False,
    int4: Annotated[bool, typer.Option(
        "--int4", help="int4 weights, activations quantized at run time (LiteRT Quantizer).")] = False,
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
    qat: Annotated[bool, typer.Option(
        "--qat/--no-qat",
        help="With --int8: also a fully integer model by quantization-aware training → "
             "model_int8_qat.tflite (and model_qat.keras, the fake-quant model it is converted "
             "from).")] = DEFAULTS.quantize.qat,
    qat_epochs: Annotated[int, typer.Option(
        help="Fine-tuning epochs of --qat (early-stopped on validation).")] = DEFAULTS.quantize.qat_epochs,
    qat_learning_rate: Annotated[float, typer.Option(
        help="Learning rate of --qat's fine-tuning (Adam).")] = DEFAULTS.quantize.qat_learning_rate,
    integer_only: Annotated[bool, typer.Option(
        "--integer-only/--no-integer-only",
        help="The target runs integer kernels only (a microcontroller, an NPU): when int8 fails its "
             "gates on the validation split, recover by QAT (model_int8_qat.tflite), never by float or "
             "int16 layers; with --recover, fail (exit 6) if the QAT model fails its accuracy-drop "
             "gate.")] = DEFAULTS.quantize.integer_only,
    engine: Annotated[str, typer.Option(
        help="litert-quantizer (LiteRT Quantizer's recipes on the float32 .tflite) or converter "
             "(TensorFlow's, legacy: to compare). Artifacts asked for with --float-io (int8, "
             "int16x8), --dynamic-batch or --compat are the converter's.")] = DEFAULTS.quantize.engine,
    calibration: Annotated[str, typer.Option(
        help="Activation ranges of int8/int16x8: minmax, percentile (99.99th), mse (least squared "
             "error from a histogram), or auto (each built, the closest to Keras on the validation "
             "split kept if it beats minmax by one standard error).")] = DEFAULTS.quantize.calibration,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Post-training quantization to TFLite, builtin ops only [default modes: the config's
    quantize.modes]."""
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize as run_quantize

    modes = [m for m, on in (("int8", int8), ("float16", float16), ("dynamic", dynamic),
                             ("int16x8", int16x8), ("weight_only_int8", weight_only_int8), ("int4", int4))
             if on] or list(DEFAULTS.quantize.modes)
    report = run_quantize(run, QuantizeOptions(
        modes=modes, pruned=pruned, calibration_samples=calibration_samples,
        float_io=float_io, dynamic_batch=dynamic_batch, compat=compat,
        calibration_data=str(calibration_data) if calibration_data else None, recover=recover,
        qat=qat, qat_epochs=qat_epochs, qat_learning_rate=qat_learning_rate, integer_only=integer_only,
        engine=engine, calibration=calibration))
    _echo_artifacts(report, [*modes, "int8_mixed", "int8_qat"])
    if report.get("qat") and (qat or (report.get("recovery") or {}).get("artifact") == report["qat"]["artifact"]):
        record = report["qat"]
        typer.echo(f"quantization-aware: {record['epochs_run']} epoch(s) of fine-tuning, "
                   f"{record['activation_quantizers']} activation ranges learned, "
                   f"{len(record['folded_batchnorms'])} BatchNorm(s) folded → {record['artifact']}")
    from pipeline.running.report_quantization import describe_calibration

    for name, entry in report["artifacts"].items():
        chosen = entry.get("calibration") or {}
        if chosen.get("alternatives") and entry.get("mode") in modes:
            typer.echo(f"{name}: calibration {describe_calibration(chosen)}")
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
    if recovery.get("integer_only") and recovery.get("artifact"):
        drop = recovery["validation"]["metric_drop"]
        return (f"int8 recovery (integer only): full int8 fails its gates{before}; QAT instead of float "
                f"layers → {recovery['artifact']} (validation accuracy drop {drop * 100:.2f} pt, "
                f"{recovery['status']})")
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
    integer_only: Annotated[bool, typer.Option(
        "--integer-only/--no-integer-only",
        help="The target runs integer kernels only: never leave an int8 ONNX's nodes float (its fully "
             "integer model is the QAT one, model_int8_qat.onnx).")] = DEFAULTS.quantize.integer_only,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Float32 TFLite and ONNX, plus int8 ONNX (ONNX Runtime QDQ and tf2onnx from int8 TFLite)."""
    from pipeline.config.stages import ConvertOptions
    from pipeline.optimizing.convert import convert as run_convert

    report = run_convert(run, ConvertOptions(
        targets=_items(to, "--to") if to else list(DEFAULTS.convert.targets), opset=opset, pruned=pruned,
        calibration_samples=calibration_samples,
        calibration_data=str(calibration_data) if calibration_data else None, int8_onnx=int8_onnx,
        recover=recover, integer_only=integer_only))
    _echo_artifacts(report, None)
    if (report.get("recovery") or {}).get("needed"):
        typer.echo(_describe_recovery(report["recovery"]))


def _echo_artifacts(report: dict, modes) -> None:
    for name, row in report["artifacts"].items():
        if modes is None or row.get("mode") in modes:
            typer.echo(f"{name:32s} {row['size_bytes'] / 1024:9.1f} KiB  sha256 {row['sha256'][:12]}")
