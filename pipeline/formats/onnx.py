"""Keras → ONNX through tf2onnx (``from_function``; ``from_keras`` is broken on Keras 3),
ONNX Runtime static QDQ quantization, and tf2onnx's conversion of an int8 TFLite model."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import first_line
from pipeline.core.errors import ConversionError

DEFAULT_OPSET = 17  # the config's convert.opset default
MAX_OPSET = 18


def check_opset(opset: int) -> None:
    if not 9 <= opset <= MAX_OPSET:
        raise ConversionError(f"--opset must lie in 9..{MAX_OPSET} (tf2onnx 1.17), got {opset}")


def keras_to_onnx(model, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True):
    """A float32 ONNX ModelProto with one input named ``input``: by tf2onnx, or where
    TensorFlow is absent, by Keras's ONNX export under the torch backend."""
    from pipeline.core.backend import tensorflow_available

    check_opset(opset)
    if not tensorflow_available():
        from pipeline.formats.onnx_export import onnx_by_keras_export

        return onnx_by_keras_export(model, opset, dynamic_batch)
    import tensorflow as tf
    import tf2onnx

    check_opset(opset)
    shape = [None if dynamic_batch else 1, *model.input_shape[1:]]
    signature = [tf.TensorSpec(shape, tf.float32, name="input")]
    function = tf.function(lambda x: model(x, training=False))
    from edge_runtime.quiet import quiet_native

    try:
        with quiet_native():
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"tf2onnx could not convert the model: {first_line(exc)}") from None
    return proto


def tflite_to_onnx(tflite_path: Path, *, opset: int = DEFAULT_OPSET):
    """tf2onnx's conversion of a (quantized) TFLite model: matches LiteRT bit for bit."""
    import tf2onnx

    check_opset(opset)
    from edge_runtime.quiet import quiet_native

    try:
        with quiet_native():
            proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"tf2onnx could not convert {tflite_path.name}: {first_line(exc)}") from None
    return proto


def quantize_qdq(float_proto, calibration: np.ndarray):
    """ONNX Runtime static quantization: QDQ format, per-channel int8 weights, int8 activations."""
    return quantize_prepared(prepare_for_quantization(float_proto), calibration)


def prepare_for_quantization(float_proto):
    """ONNX Runtime's pre-processing (shape inference, graph optimisation): the graph whose
    node names ``quantize_prepared``'s ``exclude`` refers to."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        float_path, prepared = Path(tmp) / "f.onnx", Path(tmp) / "p.onnx"
        onnx.save(float_proto, float_path)
        quant_pre_process(str(float_path), str(prepared))
        return onnx.load(prepared)


# Nodes whose precision recovery can raise: those with weights or requantized arithmetic (the
# data-movement ops ONNX Runtime also wraps in QDQ follow their neighbours), as recover.RAISABLE.
RAISABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "GlobalAveragePool",
            "MaxPool", "GlobalMaxPool", "Softmax", "Concat")


def quantizable_nodes(prepared) -> list[tuple[str, str]]:
    """(op type, node name) of every raisable node ONNX Runtime's QDQ quantizer quantizes, in
    graph order."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    quantized = {*QDQRegistry, *QLinearOpsRegistry}  # what quantize_static quantizes by default
    return [(node.op_type, node.name) for node in prepared.graph.node
            if node.op_type in RAISABLE and node.op_type in quantized and node.name]


def quantize_prepared(prepared, calibration: np.ndarray, *, exclude: list[str] = (),
                      input_range: tuple[float, float] | None = None):
    """QDQ int8 of a prepared graph, calibrated on ``calibration``; the nodes named in
    ``exclude`` stay float, and the model's input is quantized over ``input_range`` when given
    (so no valid input saturates)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if calibration is None or len(calibration) == 0:
        raise ConversionError("int8 ONNX needs calibration samples: pass --calibration-samples N")
    input_name = prepared.graph.input[0].name

    class Samples(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter({input_name: sample[None].astype(np.float32)} for sample in calibration)

        def get_next(self):
            return next(self._feeds, None)

    extra = {}
    if input_range is not None:
        extra["TensorQuantOverrides"] = {input_name: [{"rmin": np.float32(input_range[0]),
                                                       "rmax": np.float32(input_range[1])}]}
    with tempfile.TemporaryDirectory() as tmp:
        prepared_path, quantized = Path(tmp) / "p.onnx", Path(tmp) / "q.onnx"
        onnx.save(prepared, prepared_path)
        quantize_static(str(prepared_path), str(quantized), Samples(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(exclude), extra_options=extra)
        return onnx.load(quantized)


_GENERATED = re.compile(r"^(.*?)__\d+(:\d+)?$")
_COUNTER = re.compile(r"__\d+")


def canonical_names(proto) -> None:
    """Rename tf2onnx's counter-suffixed names (``scale__47``, ``Relu__24:0``) in order of first use.

    tf2onnx numbers the constants it creates in an order that depends on Python's string
    hashing, so two conversions of one model differ byte-wise; after this they do not.
    """
    graph = proto.graph
    tensor_map: dict[str, str] = {}
    node_map: dict[str, str] = {}
    # tf2onnx merges equal constants and keeps whichever name a hash order puts first
    # ("const_axes" in one process, "const_starts" in the next): constants get no stem.
    constants = {initializer.name for initializer in graph.initializer}

    def rename(name: str, table: dict[str, str]) -> str:
        match = _GENERATED.match(name)
        if not match:
            return name
        if name not in table:
            # counters can nest ("X__202_DequantizeLinear__203"): drop every one of them
            stem = "const" if name in constants else _COUNTER.sub("", match.group(1))
            table[name] = f"{stem}__c{len(table)}{match.group(2) or ''}"
        return table[name]

    for node in graph.node:
        node.name = rename(node.name, node_map)
        for i, name in enumerate(node.input):
            node.input[i] = rename(name, tensor_map)
        for i, name in enumerate(node.output):
            node.output[i] = rename(name, tensor_map)
    for initializer in graph.initializer:
        initializer.name = rename(initializer.name, tensor_map)
    dim_map: dict[str, str] = {}
    for info in (*graph.value_info, *graph.input, *graph.output):
        info.name = rename(info.name, tensor_map)
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):  # symbolic sizes such as the batch: "unk__606"
                dim.dim_param = rename(dim.dim_param, dim_map)
    ordered = sorted(graph.initializer, key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def with_metadata(proto, metadata: dict[str, Any]) -> bytes:
    """Serialize with the pipeline's metadata in ONNX ``metadata_props`` (JSON values)."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = f"pipeline.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value)
    canonical_names(proto)
    proto.producer_name = "keras-edge-pipeline"
    proto.doc_string = ""
    proto.graph.doc_string = ""  # tf2onnx's differs from process to process
    return proto.SerializeToString()


# Ops an activation's quantization passes through unchanged on its way to a convolution.
_SAME_SCALE = ("Transpose", "Reshape", "MaxPool", "Identity", "Flatten", "Squeeze", "Unsqueeze")


def with_integer_weights(proto):
    """A fake-quant model's ONNX (activations already Quantize/DequantizeLinear, weights float on
    their int8 grid) with every convolution's weights stored as int8 behind a per-channel
    DequantizeLinear (symmetric, narrow range: the fake quantization's own grid), and its bias as
    int32 at the input scale times the weight scale where the input's scale is known: a QDQ
    model ONNX Runtime runs with integer kernels, from the ranges the training learned."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}

    def input_scale(name: str):
        node = producers.get(name)
        while node is not None and node.op_type in _SAME_SCALE:
            node = producers.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in initializers:
            return None
        return float(numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)[0])

    added, nodes = [], []
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in initializers:
            weights = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            limit = np.maximum(np.abs(weights.reshape(len(weights), -1)).max(axis=1), 1e-12)
            scale = (limit / 127.0).astype(np.float32)
            shaped = scale.reshape(-1, *[1] * (weights.ndim - 1))
            quantized = np.clip(np.round(weights / shaped), -127, 127).astype(np.int8)
            base = f"{node.name}_weights"
            added += [numpy_helper.from_array(quantized, f"{base}_q"), numpy_helper.from_array(scale, f"{base}_scale"),
                      numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{base}_zero")]
            nodes.append(helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero"],
                                          [f"{base}_dq"], name=f"{base}_dequantize", axis=0))
            node.input[1] = f"{base}_dq"
            activation_scale = input_scale(node.input[0])
            if len(node.input) > 2 and node.input[2] in initializers and activation_scale is not None:
                bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
                bias_scale = (scale.astype(np.float64) * activation_scale).astype(np.float32)
                bias_q = np.round(bias / bias_scale).astype(np.int32)
                name = f"{node.name}_bias"
                added += [numpy_helper.from_array(bias_q, f"{name}_q"),
                          numpy_helper.from_array(bias_scale, f"{name}_scale"),
                          numpy_helper.from_array(np.zeros(len(bias_q), np.int32), f"{name}_zero")]
                nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"],
                                              [f"{name}_dq"], name=f"{name}_dequantize", axis=0))
                node.input[2] = f"{name}_dq"
        nodes.append(node)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def convert(job) -> None:
    """``pipeline convert --to onnx``: the float32 ONNX of the run's model; with ``int8_onnx``,
    its QDQ int8 (ONNX Runtime's static quantizer, per channel, on the job's calibration
    samples) and that int8's recovery where it fails its gates (``job.recover_onnx``); and
    tf2onnx's conversion of the run's int8 TFLite when there is one."""
    import time

    from edge_runtime.artifact import sidecar_path
    from pipeline import __version__
    from pipeline.core.fsutil import read_json, remove_file
    from pipeline.formats.sidecar import write_artifact

    context, options, source = job.context, job.options, job.source
    metadata = {"version": __version__, "preprocessing": context.preprocessing,
                "class_names": context.preprocessing.get("class_names", []),
                "source_sha256": read_json(context.run_dir / "manifest.json")
                .get("artifacts", {}).get(source.name, "")}
    started = time.perf_counter()
    float_proto = keras_to_onnx(job.model, opset=options.opset)
    path = job.path("float32.onnx")
    sidecar = write_artifact(path, with_metadata(float_proto, {**metadata, "mode": "float32"}),
                             fmt="onnx", mode="float32", context=context, source=source,
                             options={"opset": options.opset})
    job.record(path, sidecar, started)
    recovery = None
    if options.int8_onnx:
        started = time.perf_counter()
        calibration_source, indices, samples = job.calibration
        path = job.path("int8.onnx")
        int8_metadata = {**metadata, "mode": "int8", "calibration_indices": [int(i) for i in indices]}
        sidecar = write_artifact(
            path, with_metadata(quantize_qdq(float_proto, samples), int8_metadata),
            fmt="onnx", mode="int8", context=context, source=source, calibration_indices=indices,
            calibration_source=calibration_source,
            options={"opset": options.opset, "method": "onnxruntime-qdq-per-channel"})
        job.record(path, sidecar, started, method="onnxruntime-qdq-per-channel")
        if options.recover is not False:
            recovery = job.recover_onnx(float_proto, path, int8_metadata)
        _int8_tflite_to_onnx(job, metadata)
        _qat_to_onnx(job, metadata)
    mixed = job.path("int8_mixed.onnx")
    job.report["artifacts"].pop(mixed.name, None)
    job.report.pop("recovery", None)
    if not (recovery or {}).get("artifact"):  # a mix from before no longer matches the int8 ONNX
        for stale in (mixed, sidecar_path(mixed)):
            remove_file(stale)
    if recovery is not None:
        job.report["recovery"] = recovery
        if recovery.get("artifact"):
            job.report["artifacts"][mixed.name] = {
                "format": "onnx", "mode": "int8_mixed", "size_bytes": recovery["size_bytes"],
                "sha256": recovery["sha256"], "method": "onnxruntime-qdq-nodes-excluded"}


def _int8_tflite_to_onnx(job, metadata: dict) -> None:
    """tf2onnx's ONNX of the run's int8 TFLite (``pipeline quantize --int8`` makes it; when it is
    not there yet, its ONNX twin follows on the next convert)."""
    import time

    from edge_runtime.artifact import read_sidecar
    from pipeline.formats.sidecar import write_artifact

    int8_tflite = job.path("int8.tflite")
    if not int8_tflite.exists():
        return
    from pipeline.core.backend import tensorflow_available

    if not tensorflow_available():  # said, not skipped silently
        import logging

        logging.getLogger("pipeline").warning(
            "warning: %s not made: tf2onnx (the int8 TFLite's ONNX twin) needs TensorFlow, which this "
            "environment lacks", job.path("int8_tflite.onnx").name)
        return
    started = time.perf_counter()
    tflite_sidecar = read_sidecar(int8_tflite) or {}
    proto = tflite_to_onnx(int8_tflite, opset=job.options.opset)
    path = job.path("int8_tflite.onnx")
    calibration = (tflite_sidecar.get("calibration") or {}).get("indices")
    content = with_metadata(proto, {**metadata, "mode": "int8", "calibration_indices": calibration or []})
    sidecar = write_artifact(path, content, fmt="onnx", mode="int8", context=job.context, source=job.source,
                             calibration_indices=calibration, io_overrides=_renamed_io(tflite_sidecar, proto),
                             options={"opset": job.options.opset, "method": "tf2onnx-from-tflite",
                                      "tflite": int8_tflite.name})
    job.record(path, sidecar, started, method="tf2onnx-from-tflite")


def _qat_to_onnx(job, metadata: dict) -> None:
    """The QDQ ONNX of the run's quantization-aware model, from the ranges its training learned
    (the fake-quant model the QAT TFLite artifact was converted from, when it is still that one)."""
    import time

    from edge_runtime.artifact import read_sidecar
    from pipeline.core.fsutil import sha256_file
    from pipeline.core.modelio import load_model
    from pipeline.formats.sidecar import write_artifact

    record = ((read_sidecar(job.path("int8_qat.tflite")) or {}).get("options") or {}).get("qat")
    name = record.get("fake_quant_model") if isinstance(record, dict) else None
    fake_quant = job.context.run_dir / name if isinstance(name, str) and Path(name).name == name else None
    if fake_quant is None or not fake_quant.is_file() or sha256_file(fake_quant) != record.get("fake_quant_sha256"):
        return  # `pipeline quantize --int8 --qat` makes it; its ONNX twin follows on the next convert
    import pipeline.core.fake_quant  # noqa: F401  (registers the layers)

    started = time.perf_counter()
    proto = with_integer_weights(keras_to_onnx(load_model(fake_quant, unsafe=False), opset=job.options.opset))
    path = job.path("int8_qat.onnx")
    sidecar = write_artifact(path, with_metadata(proto, {**metadata, "mode": "int8_qat"}), fmt="onnx",
                             mode="int8_qat", context=job.context, source=job.source,
                             options={"opset": job.options.opset, "method": "tf2onnx-qdq-from-fake-quant",
                                      "qat": record})
    job.record(path, sidecar, started, method="tf2onnx-qdq-from-fake-quant")


def _renamed_io(tflite_sidecar: dict, proto) -> dict | None:
    """The int8 TFLite's I/O quantization, under the ONNX graph's tensor names."""
    if not tflite_sidecar:
        return None
    io = {}
    for key, tensors in (("inputs", proto.graph.input), ("outputs", proto.graph.output)):
        io[key] = [{**recorded, "name": tensor.name}
                   for recorded, tensor in zip(tflite_sidecar.get(key, []), tensors)]
    return io
