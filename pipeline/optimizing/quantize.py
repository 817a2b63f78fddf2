"""``pipeline quantize``: post-training quantization to TFLite (int8, float16, dynamic, int16x8)."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from pipeline.config.stages import QuantizeOptions
from pipeline.core import rundir
from pipeline.core.fsutil import read_json, remove_file, write_json
from pipeline.data.context import RunContext
from pipeline.formats.kinds import MIXED_INT8, QAT_INT8, quant_mode
from pipeline.formats.sidecar import write_artifact


def quantize(run: str | Path | None, options: QuantizeOptions) -> dict:
    """Write one TFLite artifact (+ sidecar) per mode and ``quantize.json``; return its content."""
    return RunContext.run_stage(run, options, _quantize_locked)


def _quantize_locked(context: RunContext, options: QuantizeOptions) -> dict:
    from pipeline.core.backend import tensorflow_available
    from pipeline.core.errors import UsageError
    from pipeline.formats.litert_quantizer import quantize_with_recipe
    from pipeline.formats.tflite import float_tflite_with_signature, to_tflite

    source = context.model_path(options.pruned)
    model = context.load_model(options.pruned)
    needs_calibration = any(quant_mode(m).needs_calibration for m in options.modes)
    calibration_source, indices, samples = calibration_set(
        context, options.calibration_samples if needs_calibration else 0, options.calibration_data)
    report_path = context.run_dir / "quantize.json"
    report = read_json(report_path) if report_path.exists() else {"artifacts": {}}
    written = []
    float_model = None
    for mode in options.modes:
        spec = quant_mode(mode)
        started = time.perf_counter()
        engine = options.engine_for(mode)
        calibration = None
        if engine == "converter" and not tensorflow_available():
            raise UsageError(f"{mode} by TensorFlow's converter ({_why_converter(options, mode)}) needs "
                             f"TensorFlow, which this environment lacks: drop that option, or install "
                             f"keras-edge-pipeline[train]")
        if engine == "litert-quantizer":
            if float_model is None:
                float_model = float_tflite_with_signature(model)
            if spec.needs_calibration:
                flatbuffer, calibration = _calibrated(context, options, model, float_model, mode, samples)
            else:
                flatbuffer = quantize_with_recipe(float_model, mode, None)
        else:
            flatbuffer = to_tflite(model, mode, calibration=samples if spec.needs_calibration else None,
                                   float_io=options.float_io, dynamic_batch=options.dynamic_batch,
                                   compat=options.compat)
        path = context.run_dir / quant_mode(mode).file(options.pruned)
        sidecar = write_artifact(
            path, flatbuffer, fmt="tflite", mode=mode, context=context, source=source,
            calibration_indices=indices if spec.needs_calibration else None,
            calibration_source=calibration_source,
            options={"float_io": options.float_io, "dynamic_batch": options.dynamic_batch,
                     "compat": options.compat, "pruned": options.pruned, "engine": engine,
                     **({"calibration": calibration} if calibration else {})})
        report["artifacts"][path.name] = {
            "mode": mode, "format": "tflite", "size_bytes": sidecar["size_bytes"],
            "sha256": sidecar["sha256"], "convert_seconds": round(time.perf_counter() - started, 3),
            "calibration_samples": len(indices) if spec.needs_calibration else 0,
            "pruned": options.pruned, "engine": engine, **({"calibration": calibration} if calibration else {}),
        }
        written.append(path)
    if options.qat:
        _add_qat(report, _quantization_aware(context, options, model, source, samples, indices,
                                             calibration_source, written), options, len(indices))
    if "int8" in options.modes and options.recover is not False:
        if options.integer_only:
            recovery = _integer_only(context, options, model, samples, indices, calibration_source, written,
                                     report, source)
        else:
            recovery = _recover(context, options, model, source, samples, indices, calibration_source, written)
        report["recovery"] = recovery
        mixed = MIXED_INT8.file(options.pruned)
        report["artifacts"].pop(mixed, None)
        if recovery.get("artifact") == mixed:
            report["artifacts"][mixed] = {"mode": "int8_mixed", "format": "tflite", "pruned": options.pruned,
                                          "size_bytes": recovery["size_bytes"], "sha256": recovery["sha256"]}
    write_json(report_path, report)
    rundir.update_manifest(context.run_dir, "quantize", artifacts=[*written, report_path])
    return report


def _why_converter(options: QuantizeOptions, mode: str) -> str:
    asked = [flag for flag, on in (("--engine converter", options.engine == "converter"),
                                   ("--dynamic-batch", options.dynamic_batch),
                                   ("--compat", options.compat is not None), ("--float-io", options.float_io)) if on]
    return ", ".join(asked) or f"{mode} has no LiteRT Quantizer recipe"


def _calibrated(context: RunContext, options: QuantizeOptions, model, float_model: bytes, mode: str,
                samples) -> tuple[bytes, dict]:
    """A static mode by LiteRT Quantizer with the activation ranges ``options.calibration``
    asks for; ``auto``: each method built, the closest to Keras on the validation split kept."""
    from pipeline.formats.litert_quantizer import quantize_with_recipe

    if options.calibration != "auto":
        return (quantize_with_recipe(float_model, mode, samples, method=options.calibration),
                {"method": options.calibration})
    from pipeline.optimizing.calibration_choice import choose

    x_val, _ = context.dataset.split("val")
    return choose(model, float_model, mode, samples, x_val, context.task)


def _quantization_aware(context: RunContext, options: QuantizeOptions, model, source: Path, samples,
                        indices, calibration_source, written: list[Path]) -> dict:
    """``model_int8_qat.tflite`` and the fake-quant model it is converted from: the model rebuilt
    with fake quantization, calibrated on the int8 model's samples, fine-tuned on the train split
    (early-stopped on validation), converted to a fully integer TFLite model."""
    from pipeline.core.backend import import_keras
    from pipeline.core.fsutil import sha256_file
    from pipeline.core.modelio import save_model
    from pipeline.formats.kinds import PRUNED_QAT_MODEL, QAT_MODEL
    from pipeline.formats.tflite import fake_quant_to_tflite
    from pipeline.optimizing import qat
    from pipeline.optimizing.qat_fine_tune import CHILD_BACKENDS, Checkpoints, fine_tune, fine_tune_in_child
    from pipeline.optimizing.splits import StreamedSplits, fine_tuning_splits

    started = time.perf_counter()
    built = qat.build(model)
    qat.calibrate(built.model, samples)
    splits = fine_tuning_splits(import_keras(), context)
    fingerprint = json.dumps({"model": sha256_file(source), "calibration": [int(i) for i in indices],
                              "calibration_source": calibration_source, "epochs": options.qat_epochs,
                              "learning_rate": options.qat_learning_rate, "seed": context.seed}, sort_keys=True)
    checkpoints = Checkpoints(context.run_dir / "checkpoints" / ("qat_pruned" if options.pruned else "qat"),
                              hashlib.sha256(fingerprint.encode()).hexdigest())
    backend = str(context.train_info.get("backend") or "tensorflow")
    if backend in CHILD_BACKENDS:  # fine-tuned as the run was trained, converted here
        trained, history = fine_tune_in_child(backend, built.model, splits, context, epochs=options.qat_epochs,
                                              learning_rate=options.qat_learning_rate, seed=context.seed,
                                              checkpoints=checkpoints)
    else:
        backend = "tensorflow"
        trained, history = fine_tune(built.model, splits, task=context.task, epochs=options.qat_epochs,
                                     learning_rate=options.qat_learning_rate, seed=context.seed,
                                     checkpoints=checkpoints)
    content = fake_quant_to_tflite(trained, float_io=options.float_io, dynamic_batch=options.dynamic_batch)
    fake_quant_path = save_model(trained, context.run_dir / (PRUNED_QAT_MODEL if options.pruned else QAT_MODEL))
    record = {"fake_quant_model": fake_quant_path.name, "fake_quant_sha256": sha256_file(fake_quant_path),
              "streamed": isinstance(splits, StreamedSplits), "fine_tuned_under": backend,
              "epochs": options.qat_epochs, "epochs_run": len(history.get("loss", [])),
              "resumed_from_epoch": history.pop("resumed_from_epoch"),
              "learning_rate": options.qat_learning_rate, "activation_quantizers": built.quantizers,
              "folded_batchnorms": built.folded_batchnorms, "history": history}
    path = context.run_dir / QAT_INT8.file(options.pruned)
    sidecar = write_artifact(path, content, fmt="tflite", mode=QAT_INT8.name, context=context, source=source,
                             calibration_indices=indices, calibration_source=calibration_source,
                             options={"float_io": options.float_io, "dynamic_batch": options.dynamic_batch,
                                      "pruned": options.pruned, "qat": record})
    written += [path, fake_quant_path]
    checkpoints.clear()  # the artifact is whole: a later run starts its own fine-tune
    return {**record, "artifact": path.name, "size_bytes": sidecar["size_bytes"], "sha256": sidecar["sha256"],
            "seconds": round(time.perf_counter() - started, 3)}


def _add_qat(report: dict, record: dict, options: QuantizeOptions, calibration_samples: int) -> None:
    report["qat"] = record
    report["artifacts"][QAT_INT8.file(options.pruned)] = {
        "mode": QAT_INT8.name, "format": "tflite", "pruned": options.pruned, "size_bytes": record["size_bytes"],
        "sha256": record["sha256"], "calibration_samples": calibration_samples}


def _integer_only(context: RunContext, options: QuantizeOptions, model, samples, indices, calibration_source,
                  written: list[Path], report: dict, source: Path) -> dict:
    """Recovery for a target that runs integer kernels only: a full int8 model that fails its
    gates on the validation split is replaced by the QAT model (trained here unless ``--qat``
    already did), never by a mix with float or int16 layers. The QAT model is held to the
    accuracy-drop gate against the float model (its agreement is with its fake-quant model,
    which verify checks)."""
    import logging

    from edge_runtime.artifact import sidecar_path
    from pipeline.config.gates import VerifyOptions
    from pipeline.core.errors import ParityError, UsageError
    from pipeline.optimizing.mixed_precision import Validation

    mixed = context.run_dir / MIXED_INT8.file(options.pruned)
    for stale in (mixed, sidecar_path(mixed)):  # no mix: nothing float or int16 is allowed
        remove_file(stale)
    x_val, y_val = context.dataset.split("val")
    if len(x_val) == 0:
        if options.recover:
            raise UsageError("integer-only recovery scores int8 on the validation split, and this run has none: "
                             "train or import with a validation fraction above 0")
        return {"status": "skipped: no validation split", "integer_only": True}
    rules = VerifyOptions(gates=options.gates).resolved_gates(context.task)["quantized"]
    validation = Validation(model, x_val, y_val, context.task, rules)
    full = (context.run_dir / quant_mode("int8").file(options.pruned)).read_bytes()
    baseline = validation.score(full)
    summary = {"integer_only": True, "needed": not baseline.passed, "validation_samples": int(len(x_val)),
               "full_int8": baseline.as_dict()}
    if baseline.passed:
        return {**summary, "status": "full int8 passes: left alone"}
    if not options.qat:
        _add_qat(report, _quantization_aware(context, options, model, source, samples, indices,
                                             calibration_source, written), options, len(indices))
    qat_path = context.run_dir / QAT_INT8.file(options.pruned)
    drop_rule = {name: rule for name, rule in rules.items() if name == "metric_drop"}
    score = validation.score(qat_path.read_bytes(), rules=drop_rule)
    record = {**summary, "status": "qat" if score.passed else "qat fails its gates",
              "validation": score.as_dict(), "artifact": qat_path.name,
              "size_bytes": report["qat"]["size_bytes"], "sha256": report["qat"]["sha256"],
              "acceptance": "the QAT model's accuracy drop against the float model passes its gate on the "
                            "validation split (its agreement is with its fake-quant model, checked by verify)"}
    if not score.passed:
        message = (f"integer-only recovery: full int8 fails its gates on the {len(x_val)} validation samples and "
                   f"the QAT model still loses {score.metric_drop * 100:.2f} pt of accuracy "
                   f"(gate {drop_rule['metric_drop'][1] * 100:.2f} pt); try more --qat-epochs")
        if options.recover:
            raise ParityError(message)
        logging.getLogger("pipeline").warning("warning: %s", message)
    return record


def _recover(context: RunContext, options: QuantizeOptions, model, source: Path, samples,
             indices, calibration_source, written: list[Path]) -> dict:
    """Keep a passing int8 model as it is; otherwise write ``model_int8_mixed.tflite``."""
    from pipeline.optimizing.mixed_precision import recover_int8

    mixed = context.run_dir / MIXED_INT8.file(options.pruned)
    full = (context.run_dir / quant_mode("int8").file(options.pruned)).read_bytes()

    def write(content: bytes, recovery: dict) -> dict:
        return write_artifact(mixed, content, fmt="tflite", mode=MIXED_INT8.name, context=context,
                              source=source, calibration_indices=indices, calibration_source=calibration_source,
                              options={"pruned": options.pruned, "recovery": recovery})

    return recovery_stage(context, options.recover, options.gates, mixed, written, write,
                          lambda x_val, y_val, rules, valid: recover_int8(model, full, samples, x_val, y_val,
                                                                          context.task, rules, valid))


def recovery_stage(context: RunContext, recover: bool | None, gates: dict, mixed: Path, written: list[Path],
                   write, attempt) -> dict:
    """The part of int8 recovery every format shares: the validation split and the gates,
    ``attempt(x_val, y_val, rules, input_range)`` (a ``recover.Recovery``), the warning when the
    validation split is too small to tell, ``write(model, record)`` of a passing mix (its
    sidecar), and no stale mix left behind. ``recover`` None warns when no mix passes, True
    fails (exit 6)."""
    import logging

    from edge_runtime.artifact import sidecar_path
    from pipeline.config.gates import VerifyOptions
    from pipeline.core.errors import ParityError
    from pipeline.optimizing.mixed_precision import MAX_FRACTION, input_range, samples_to_tell

    log = logging.getLogger("pipeline")
    x_val, y_val = context.dataset.split("val")
    if len(x_val) == 0 and recover is None:
        return {"status": "skipped: no validation split"}
    rules = VerifyOptions(gates=gates).resolved_gates(context.task)["quantized"]
    valid_inputs = input_range(context.preprocessing, (x for x, _ in context.dataset.chunks("train")))
    result = attempt(x_val, y_val, rules, valid_inputs)
    summary = {"needed": result.needed, "validation_samples": int(len(x_val)),
               "full_int8": result.baseline.as_dict(), "tries": result.tries,
               "raisable_layers": result.raisable_layers, "input_range": list(valid_inputs),
               "acceptance": "passes every gate by one standard error of the validation estimate"}
    needed = samples_to_tell(rules)
    if result.needed and context.task == "classifier" and needed and len(x_val) < needed:
        summary["validation_too_small"] = needed
        log.warning("warning: int8 recovery scores mixes on %d validation samples, too few to tell a "
                    "%.0f%% agreement gate apart at 95%% even for a perfect mix (that takes %d); a mix "
                    "must pass by one standard error", len(x_val), rules["top1_agreement"][1] * 100, needed)
    if not result.needed or result.model is None:
        for stale in (mixed, sidecar_path(mixed)):  # never leave a mix that no longer applies
            remove_file(stale)
    if not result.needed:
        return {**summary, "status": "full int8 passes: left alone"}
    if result.model is None:
        best = result.best
        what = "int8 ONNX recovery" if mixed.suffix == ".onnx" else "int8 recovery"
        message = (f"{what}: no mix raising at most "
                   f"{max(1, int(result.raisable_layers * MAX_FRACTION))} of {result.raisable_layers} layers passes "
                   f"the gates by one standard error on the {len(x_val)} validation samples (best top-1 agreement "
                   f"{best.agreement:.2%}, accuracy drop {best.metric_drop * 100:.2f} pt)"
                   if best.agreement is not None else f"{what}: no mix passes on the validation split")
        if recover:
            raise ParityError(message)
        log.warning("warning: %s", message)
        return {**summary, "status": "no mix passes", "best": best.as_dict()}
    recovery = {**summary, "status": "recovered", "raised": result.raised, "validation": result.best.as_dict()}
    sidecar = write(result.model, recovery)
    written.append(mixed)
    return {**recovery, "artifact": mixed.name, "size_bytes": sidecar["size_bytes"],
            "sha256": sidecar["sha256"]}


def calibration_set(context: RunContext, count: int, path: str | None = None):
    """``(source, indices, model-ready samples)``: ``count`` samples drawn with the run's seed
    from the user's file of raw samples, or from the training split. The int8 TFLite and the
    int8 ONNX both calibrate on this, and their sidecars record ``source`` and ``indices``."""
    if path:
        return calibration_from_file(context, path, count)
    indices, samples = context.calibration(count)
    return {"split": "train", "seed": context.seed}, indices, samples


def calibration_from_file(context: RunContext, path: str, count: int):
    """Calibration samples from the user's file: raw samples (like the data set's, e.g. uint8
    pixels), checked against the preprocessing spec, seeded sample, then preprocessed."""
    import zipfile

    import numpy as np

    from edge_runtime.errors import InputError
    from edge_runtime.preprocessing import apply_preprocessing, check_raw_input
    from pipeline.core.errors import DataError
    from pipeline.core.fsutil import sha256_file

    file = Path(path)
    if not file.is_file():
        raise DataError(f"calibration file {file} is not a regular file" if file.exists()
                        else f"calibration file {file} does not exist")
    try:
        loaded = np.load(file, allow_pickle=False)
        raw = loaded if isinstance(loaded, np.ndarray) else loaded["x"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read calibration samples from {file} (an .npy, or an .npz with "
                        f"'x'): {exc}") from None
    if not isinstance(raw, np.ndarray) or raw.ndim < 1:
        raise DataError(f"calibration file {file} holds no array of samples")
    expected = tuple(context.preprocessing["input_shape"])
    if raw.shape[1:] != expected:
        raise DataError(f"calibration samples in {file} have shape {raw.shape[1:]}, the model "
                        f"expects {expected}")
    if not len(raw) or raw.dtype.kind not in "fiub":
        raise DataError(f"calibration file {file} holds no numeric samples")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise DataError(f"calibration samples in {file} hold NaN or inf values")
    try:
        check_raw_input(raw, context.preprocessing, preprocessed_hint="but a calibration file holds raw samples "
                        f"like the data set's ({context.preprocessing.get('raw_dtype')}), before any scaling")
    except InputError as exc:
        raise DataError(f"calibration samples in {file}: {exc}") from None
    count = min(count, len(raw)) if count else len(raw)
    rng = np.random.default_rng(context.seed)
    indices = np.sort(rng.choice(len(raw), size=count, replace=False))
    samples = apply_preprocessing(raw[indices], context.preprocessing)
    return {"file": str(file), "sha256": sha256_file(file), "seed": context.seed}, indices, samples
