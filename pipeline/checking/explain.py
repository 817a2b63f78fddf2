"""Which layers lose the most to quantization, and what to try.

TFLite: TensorFlow's ``QuantizationDebugger`` re-runs the artifact's own conversion (same mode,
options and recorded calibration samples) and compares every quantized tensor with its float
twin. ONNX (QDQ): ONNX Runtime's ``qdq_loss_debug`` compares the QDQ model's activations with
the float ONNX model's. Both rank layers by their error.
"""
from __future__ import annotations

import csv
import io
import re
import tempfile
from pathlib import Path

import numpy as np

from edge_runtime.artifact import read_sidecar
from pipeline.core.fsutil import sha256_file
from pipeline.formats.kinds import PRUNED_MODEL

# Uniform rounding noise alone gives rmse/scale = 1/sqrt(12) ≈ 0.29.
IDEAL_RMSE_OVER_SCALE = 1 / np.sqrt(12)


def recorded_calibration(context, sidecar: dict) -> tuple[np.ndarray, str]:
    """The exact calibration samples an artifact was made with, and a description."""
    from edge_runtime.preprocessing import apply_preprocessing

    calibration = sidecar.get("calibration") or {}
    indices = np.asarray(calibration.get("indices", []), dtype=np.int64)
    if "file" in calibration:
        file = Path(calibration["file"])
        if not file.exists() or sha256_file(file) != calibration.get("sha256"):
            raise FileNotFoundError(f"calibration file {file} is missing or changed")
        loaded = np.load(file, allow_pickle=False)
        raw = loaded if isinstance(loaded, np.ndarray) else loaded["x"]
        return apply_preprocessing(raw[indices], context.preprocessing), f"{len(indices)} samples from {file}"
    described = f"{len(indices)} training samples (seed {calibration.get('seed')})"
    return context.dataset.take("train", indices)[0], described


def explain_tflite(context, path: Path, x_test: np.ndarray, top: int = 3) -> dict:
    import tensorflow as tf

    from pipeline.formats.tflite import make_converter

    sidecar = read_sidecar(path) or {}
    mode, options = sidecar.get("mode"), sidecar.get("options", {})
    if mode != "int8":
        return {"method": "tf.lite.experimental.QuantizationDebugger",
                "error": f"the debugger covers full-integer int8 models; {path.name} is {mode}"}
    try:
        calibration, described = recorded_calibration(context, sidecar)
    except FileNotFoundError as exc:
        return {"method": "tf.lite.experimental.QuantizationDebugger", "error": str(exc)}
    model = context.load_model(pruned=sidecar.get("source_model", {}).get("path") == PRUNED_MODEL)
    converter = make_converter(model, "int8", calibration=calibration,
                               float_io=options.get("float_io", False),
                               dynamic_batch=options.get("dynamic_batch", False))
    debug_samples = x_test[:64]
    from edge_runtime.quiet import quiet_native

    with quiet_native():  # it builds a deprecated tf.lite.Interpreter, which says so at length
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([s[None]] for s in debug_samples))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    layer_names = {layer.name for layer in model.layers}
    layers = []
    for row in csv.DictReader(dump):
        scale = float(row["scale"])
        rmse = float(np.sqrt(float(row["mean_squared_error"])))
        layers.append({"layer": _keras_layer(row["tensor_name"], layer_names), "op": row["op_name"],
                       "tensor": row["tensor_name"].split(";")[0],
                       "rmse_over_scale": rmse / scale if scale else None,
                       "max_abs_error": float(row["max_abs_error"])})
    layers.sort(key=lambda r: -(r["rmse_over_scale"] or 0))
    return {"method": "tf.lite.experimental.QuantizationDebugger (rmse/scale per tensor; "
                      f"{IDEAL_RMSE_OVER_SCALE:.2f} is pure rounding noise)",
            "debug_samples": len(debug_samples), "calibration": described,
            "worst_layers": layers[:top], "hints": _hints(layers[:top], described, "rmse_over_scale")}


def _keras_layer(tensor_name: str, layer_names: set[str]) -> str:
    """``mnist_cnn_1/conv2d_1_2/Relu;...`` → ``conv2d_1`` (tf.function scopes add a ``_N``)."""
    parts = tensor_name.split(";")[0].split("/")
    for part in parts[1:] + parts[:1]:
        stripped = re.sub(r"_\d+$", "", part)
        for candidate in (stripped, part):
            if candidate in layer_names:
                return candidate
    return parts[1] if len(parts) > 1 else parts[0]


def explain_onnx(context, path: Path, x_test: np.ndarray, top: int = 3) -> dict:
    sidecar = read_sidecar(path) or {}
    options = sidecar.get("options", {})
    if options.get("method") == "tf2onnx-from-tflite":
        tflite = path.with_name(options.get("tflite", ""))
        if tflite.exists():
            result = explain_tflite(context, tflite, x_test, top)
            result["note"] = f"{path.name} is {tflite.name} converted by tf2onnx; explained through it"
            return result
    float_model = path.with_name(path.name.replace("int8", "float32"))
    if not float_model.exists():
        return {"method": "onnxruntime qdq_loss_debug", "error": f"{float_model.name} is missing"}
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    samples = x_test[:32]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter({"input": s[None]} for s in samples)

        def get_next(self):
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(float_model), str(float_aug))
        modify_model_output_intermediate_tensors(str(path), str(qdq_aug))
        float_acts = collect_activations(str(float_aug), Reader())
        qdq_acts = collect_activations(str(qdq_aug), Reader())
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    layer_names = {layer.name for layer in context.load_model().layers}
    layers = [{"layer": _keras_layer(name, layer_names), "tensor": name,
               "sqnr_db": float(err["xmodel_err"])}
              for name, err in errors.items() if "xmodel_err" in err]
    layers.sort(key=lambda r: r["sqnr_db"])
    _, described = recorded_calibration(context, sidecar) if sidecar.get("calibration") else (None, "unknown")
    return {"method": "onnxruntime.quantization.qdq_loss_debug (SQNR of each activation vs the "
                      "float model, dB; lower is worse)", "debug_samples": len(samples),
            "calibration": described, "worst_layers": layers[:top],
            "hints": _hints(layers[:top], described, "sqnr_db")}


def _hints(worst: list[dict], calibration: str, measure: str) -> list[str]:
    if not worst:
        return []
    first = worst[0]
    hints = [f"keep layer '{first['layer']}' in float (selective quantization) and re-verify"]
    bad_range = (measure == "rmse_over_scale" and (first["rmse_over_scale"] or 0) > 10 * IDEAL_RMSE_OVER_SCALE) \
        or (measure == "sqnr_db" and first["sqnr_db"] < 10)
    if bad_range:
        hints.insert(0, f"'{first['layer']}' is far from its calibrated range: check the calibration "
                        f"data ({calibration}); use more, representative samples "
                        f"(--calibration-samples, --calibration-data)")
    if any(r.get("op") == "FULLY_CONNECTED" or "MatMul" in r.get("tensor", "") for r in worst):
        hints.append("quantize Dense weights per channel (ONNX Runtime: per_channel=True)")
    return hints
