"""Keras → TFLite, builtin ops only, for every quantization mode in ``pipeline.formats.kinds``."""
from __future__ import annotations

import re

import numpy as np

from pipeline.core.errors import ConversionError
from pipeline.formats.kinds import QUANT_MODES, quant_mode


def to_tflite(model, mode: str = "float32", *, calibration: np.ndarray | None = None,
              float_io: bool = False, dynamic_batch: bool = False,
              compat: str | None = None) -> bytes:
    """Convert a float32 Keras model to a TFLite flatbuffer.

    ``calibration`` (model-ready float samples) is required for int8 and int16x8.
    Batch-1 input by default: fewer ops on device. ``compat="tflite-runtime"`` emits op
    versions that tflite-runtime 2.14 can load.
    """
    from pipeline.core.backend import tensorflow_available

    if mode == "float32" and not (dynamic_batch or compat) and not tensorflow_available():
        return float_tflite_with_signature(model)  # litert-torch's
    converter = make_converter(model, mode, calibration=calibration, float_io=float_io,
                               dynamic_batch=dynamic_batch, compat=compat)
    from edge_runtime.quiet import quiet_native

    try:
        with quiet_native():  # "fully_quantize: 0, ...", statistics warnings
            content = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        raise _conversion_error(exc, mode) from None
    from pipeline.formats.tflite_meta import with_signature

    return with_signature(content)  # what LiteRT's signature runners and phone tooling address


def convert(job) -> None:
    """``pipeline convert --to tflite``: the float32 TFLite artifact of the run's model."""
    import time

    from pipeline.formats.sidecar import write_artifact

    started = time.perf_counter()
    path = job.path("float32.tflite")
    sidecar = write_artifact(path, to_tflite(job.model, "float32"), fmt="tflite", mode="float32",
                             context=job.context, source=job.source)
    job.record(path, sidecar, started)


# The signature of float models made for per-layer quantization (ai-edge-quantizer calibrates
# through a SignatureDef; the artifacts themselves are converted without one).
SIGNATURE, SIGNATURE_INPUT = "serving_default", "input"


def float_tflite_with_signature(model) -> bytes:
    """Float32 TFLite with a ``serving_default`` signature, batch 1, weights as constants:
    by TensorFlow's converter, or where TensorFlow is absent, under the torch backend, by
    Keras's LiteRT export (litert-torch)."""
    import keras

    from pipeline.core.backend import tensorflow_available

    if not tensorflow_available():
        return _float_tflite_by_litert_torch(model)
    import tensorflow as tf

    from edge_runtime.quiet import quiet_native

    inputs = keras.Input(shape=model.input_shape[1:], batch_size=1, name=SIGNATURE_INPUT)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, model(inputs), name="serving"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    import contextlib
    import io

    try:  # from_keras_model exports a SavedModel first and prints where (stdout)
        with quiet_native(), contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        raise _conversion_error(exc, "float32") from None


def from_function(function):
    """A ``TFLiteConverter`` of a ``tf.function`` with no trackable object (the converter then
    freezes the variables into constants), without TensorFlow's warning that this path is
    deprecated on every call: it is the one that folds fake quantization."""
    import logging

    import tensorflow as tf

    logger = logging.getLogger("absl")  # TensorFlow Lite's Python logs through absl
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    finally:
        logger.setLevel(level)


def _float_tflite_by_litert_torch(model) -> bytes:
    """The float32 model through ``litert-torch`` (Keras's ``export(format="litert")`` under
    the torch backend: no TensorFlow), with the signature named as the converter's."""
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    import keras

    from edge_runtime.quiet import quiet_native
    from pipeline.core.errors import UsageError
    from pipeline.formats.tflite_meta import with_signature

    if keras.backend.backend() != "torch":
        raise UsageError(f"a float .tflite without TensorFlow needs the torch backend (litert-torch); "
                         f"this process runs Keras on {keras.backend.backend()}: set KERAS_BACKEND=torch, "
                         f"or install TensorFlow (keras-edge-pipeline[train])")
    inputs = keras.Input(shape=model.input_shape[1:], batch_size=1, name=SIGNATURE_INPUT)
    wrapped = keras.Model(inputs, model(inputs), name="serving")
    try:
        with tempfile.TemporaryDirectory(prefix="litert-torch-") as tmp, quiet_native(), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            path = Path(tmp) / "float32.tflite"
            wrapped.export(str(path), format="litert", verbose=False)
            content = path.read_bytes()
    except ImportError as exc:
        raise UsageError(f"a float .tflite without TensorFlow needs litert-torch ({exc}): "
                         f"pip install 'keras-edge-pipeline[deploy]'") from None
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        raise _conversion_error(exc, "float32") from None
    return with_signature(content)


def make_converter(model, mode: str, *, calibration=None, float_io: bool = False,
                   dynamic_batch: bool = False, compat: str | None = None):
    """The configured ``TFLiteConverter`` (also what the quantization debugger re-runs)."""
    from pipeline.core.backend import require_tensorflow

    require_tensorflow(f"{mode} TFLite by TensorFlow's converter")
    import tensorflow as tf

    spec = quant_mode(mode)
    if spec.needs_calibration and (calibration is None or len(calibration) == 0):
        raise ConversionError(f"{mode} quantization needs calibration samples: pass "
                              f"--calibration-samples N (N > 0) with a data set")
    input_shape = [None if dynamic_batch else 1, *model.input_shape[1:]]
    signature = tf.TensorSpec(input_shape, tf.float32, name="input")
    function = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    converter = from_function(function)
    _configure(converter, spec.name, calibration, float_io, compat)
    return converter


def _configure(converter, mode: str, calibration, float_io: bool, compat: str | None) -> None:
    import tensorflow as tf

    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    converter.target_spec.supported_ops = [builtins]
    if mode == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    if mode == "dynamic":
        if compat == "tflite-runtime":
            from pipeline.compat.tensorflow import per_tensor_dense_weights

            per_tensor_dense_weights(converter)
        return
    samples = np.asarray(calibration, dtype=np.float32)
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8
    else:  # int16x8
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        io_type = tf.int16
    if not float_io:
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type


def fake_quant_to_tflite(model, *, float_io: bool = False, dynamic_batch: bool = False) -> bytes:
    """A fake-quantized Keras model (``core.fake_quant``) as a fully integer TFLite model: the
    converter folds each fake quantization into the int8 kernels around it, from the frozen
    graph (with resource variables it would keep them as Flex ops). int8 input and output unless
    ``float_io``. A tensor the converter leaves in float (a quantizer it could not fold) is a
    ``ConversionError`` naming the op and the layer."""
    from pipeline.core.backend import require_tensorflow

    require_tensorflow("the QAT model's int8 TFLite (TensorFlow's converter folds the fake quantization)")
    import tensorflow as tf

    input_shape = [None if dynamic_batch else 1, *model.input_shape[1:]]
    signature = tf.TensorSpec(input_shape, tf.float32, name="input")
    function = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    converter = from_function(function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    from edge_runtime.quiet import quiet_native

    try:
        with quiet_native():
            content = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        raise _conversion_error(exc, "int8 (quantization-aware)") from None
    left = float_ops(content)
    if left:
        op, tensor = left[0]
        raise ConversionError(f"the converter left {op} in float at '{tensor}' ({len(left)} float op(s) in all): "
                              f"its fake quantization did not fold into an int8 kernel; that layer has no fully "
                              f"integer form here (try --recover instead of --qat)")
    from pipeline.formats.tflite_meta import with_signature

    return with_signature(content)


# Ops whose float side is a float-I/O model's edge: its int8 output dequantized.
_EDGE_OPS = ("DEQUANTIZE",)


def float_ops(content: bytes) -> list[tuple[str, str]]:
    """(op, output tensor name) of every op that computes in float (a float32 output), other
    than the DEQUANTIZE at a float-output model's edge."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edge_runtime.litert_compat import op_tensors

    interpreter = Interpreter(model_content=content,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return [(op, outputs[0]["name"]) for op, _, outputs in op_tensors(interpreter)
            if op not in _EDGE_OPS and any(t["dtype"] == np.float32 for t in outputs)]


_OP_PATTERNS = (re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
                re.compile(r"Flex ops: ([\w, ]+)"),
                re.compile(r"tf\.(\w+)\s*\{"))


def _conversion_error(exc: Exception, mode: str) -> ConversionError:
    text = str(exc)
    ops: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in pattern.findall(text):
            for name in match.split(","):
                name = name.strip().removeprefix("Flex")
                if name and name not in ops:
                    ops.append(name)
    if ops:
        return ConversionError(
            f"the model needs ops outside TFLite's builtins ({', '.join(ops)}): devices without "
            f"Flex delegates cannot run it; replace those layers")
    first = next((line for line in text.splitlines() if "error" in line.lower()), text[:200])
    return ConversionError(f"{mode} conversion failed: {first.strip()[:300]}")


__all__ = ["QUANT_MODES", "convert", "to_tflite"]
