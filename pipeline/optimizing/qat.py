"""Quantization-aware training on Keras 3: the float model rebuilt with fake quantization where
TFLite's int8 kernels quantize (``core.fake_quant``), its ranges calibrated on the same samples
as post-training int8, then fine-tuned at a low learning rate on the train split, early-stopped
on validation.

Placement, as the converter computes: BatchNorm after a Conv2D / DepthwiseConv2D / Dense (its
only consumer, no activation between) is folded into the op's weights before the weight
quantizer; an op's (or an add's) output is quantized after its fused activation, or after the
ReLU layer it feeds alone; adds, concatenations, global average pooling and activation layers
get their own output range; the model input its own. Flatten, reshape, max pooling and dropout
keep their input's range; average pooling rounds its mean on its input's range, as TFLite's int8
kernel does. Any other layer is refused by name."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import UsageError

log = logging.getLogger("pipeline")

QUANTIZED_OPS = ("Conv2D", "DepthwiseConv2D", "Dense")
# Layers whose output the converter gives a scale of its own.
OUTPUT_QUANTIZED = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
                    "GlobalAveragePooling2D", "BatchNormalization", "ReLU", "Activation", "Softmax", "LeakyReLU")
# Layers that keep their input's scale (TFLite's int8 MAX_POOL_2D takes its input's scale for its
# output), or compute nothing at inference.
PASS_THROUGH = ("InputLayer", "Flatten", "Reshape", "MaxPooling2D", "GlobalMaxPooling2D",
                "Dropout", "SpatialDropout2D", "ZeroPadding2D", "Identity", "Permute", "Cropping2D")
# Layers whose int8 kernel keeps its input's scale but rounds what it computes to it (TFLite's
# AVERAGE_POOL_2D): fake-quantized again on their input's range.
ROUNDS_ON_INPUT_RANGE = ("AveragePooling2D",)
# Element-wise layers the converter fuses a following ReLU into (one requantization, after it).
FUSES_RELU = ("Add", "Subtract")
# Activations the converter fuses into the op before them.
FUSED = ("linear", "relu", "relu6")
# Activations whose int8 kernel fixes the output range: softmax and sigmoid (1/256, -128).
FIXED_RANGE = ("softmax", "sigmoid")


@dataclass
class QatModel:
    model: object            # the fake-quantized Keras model
    quantizers: int          # activation quantizers placed (the model input's included)
    folded_batchnorms: list  # names of the BatchNorm layers folded into the op before them


def activation_of(layer) -> str:
    """The name of a layer's activation (``linear`` when it has none)."""
    import keras

    config = layer.get_config()
    if type(layer).__name__ == "ReLU":
        return "relu6" if config.get("max_value") == 6 and not config.get("negative_slope") else (
            "relu" if config.get("max_value") is None and not config.get("negative_slope") else "other")
    if type(layer).__name__ == "Softmax":
        return "softmax"
    name = keras.activations.serialize(keras.activations.get(config.get("activation", "linear")))
    return name if isinstance(name, str) else name.get("config", {}).get("name", "other")


def consumers(model) -> dict[str, list[str]]:
    """Layer name → the names of the layers that read its output (public config only)."""
    found: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    config = model.get_config()
    if type(model).__name__ == "Sequential":
        names = [layer.name for layer in model.layers]
        for before, after in zip(names, names[1:]):
            found[before].append(after)
        return found
    for layer in config["layers"]:
        for source in _history_names(layer.get("inbound_nodes", [])):
            if source in found and layer["name"] not in found[source]:
                found[source].append(layer["name"])
    return found


def _history_names(node) -> list[str]:
    """Every layer name in the ``keras_history`` entries of an inbound-node config."""
    if isinstance(node, dict):
        history = node.get("config", {}).get("keras_history") if node.get("class_name") == "__keras_tensor__" else None
        if history:
            return [history[0]]
        return [name for value in node.values() for name in _history_names(value)]
    if isinstance(node, (list, tuple)):
        return [name for value in node for name in _history_names(value)]
    return []


def check_supported(model) -> None:
    """One line naming the first layer that has no fake-quantized form here."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UsageError(f"--qat takes a model of one input and one output; {model.name} has "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in (*QUANTIZED_OPS, *OUTPUT_QUANTIZED, *PASS_THROUGH, *ROUNDS_ON_INPUT_RANGE):
            raise UsageError(f"--qat: layer '{layer.name}' ({kind}) has no fake-quantized form here "
                             f"(supported: {', '.join(QUANTIZED_OPS)}, activations, adds, concatenations, "
                             f"pooling, BatchNormalization, reshapes); use --recover for this model")
        if kind in ("Conv2D", "DepthwiseConv2D") and layer.get_config().get("data_format") == "channels_first":
            raise UsageError(f"--qat: layer '{layer.name}' is channels_first; TFLite runs channels_last")


def _folded(layer, batchnorm) -> tuple[np.ndarray, np.ndarray]:
    """``layer``'s kernel and bias with the BatchNorm after it folded in (inference statistics)."""
    weights = layer.get_weights()
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1] if type(layer).__name__ != "DepthwiseConv2D"
                                                         else kernel.shape[-2] * kernel.shape[-1], np.float32)
    if batchnorm is None:
        return kernel, bias
    config = batchnorm.get_config()
    values = dict(zip([w.path.split("/")[-1] for w in batchnorm.weights], batchnorm.get_weights()))
    channels = values["moving_mean"].shape[0]
    gamma = values.get("gamma", np.ones(channels, np.float32))
    beta = values.get("beta", np.zeros(channels, np.float32))
    scale = gamma / np.sqrt(values["moving_variance"] + config["epsilon"])
    if type(layer).__name__ == "DepthwiseConv2D":
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        kernel = kernel * scale
    return kernel.astype(np.float32), ((bias - values["moving_mean"]) * scale + beta).astype(np.float32)


def build(model) -> QatModel:
    """The fake-quantized twin of a float Keras model (ranges still to calibrate)."""
    import keras

    from pipeline.core.fake_quant import ActivationQuantizer, FakeQuantOp, FoldedBatchNorm, QuantizedOutput

    check_supported(model)
    readers = consumers(model)
    by_name = {layer.name: layer for layer in model.layers}
    fold = {}  # BatchNorm name -> the op before it
    for layer in model.layers:
        after = readers[layer.name]
        if (type(layer).__name__ in QUANTIZED_OPS and activation_of(layer) == "linear" and len(after) == 1
                and type(by_name[after[0]]).__name__ == "BatchNormalization"
                and by_name[after[0]].get_config().get("axis") in (-1, [-1], [3], 3)):
            fold[after[0]] = layer.name
    folded_into = {op: bn for bn, op in fold.items()}

    def next_reader(name: str) -> list[str]:
        """Who reads ``name``'s value, looking through a folded BatchNorm."""
        after = readers[name]
        if len(after) == 1 and after[0] in fold:
            return readers[after[0]]
        return after

    def relu_follows(name: str) -> bool:
        """``name``'s value is read by one ReLU / ReLU6 activation layer alone (the converter
        fuses it into the op before it)."""
        after = next_reader(name)
        return (len(after) == 1 and type(by_name[after[0]]).__name__ in ("ReLU", "Activation")
                and activation_of(by_name[after[0]]) in ("relu", "relu6"))

    writers: dict[str, list[str]] = {name: [] for name in readers}
    for name, after in readers.items():
        for reader in after:
            writers[reader].append(name)

    def range_source(name: str) -> str | None:
        """The layer whose quantized output ``name`` reads, looking through layers that keep
        their input's range and folded BatchNorms (``input_quantizer`` for the model input)."""
        before = writers[name]
        while len(before) == 1:
            kind = type(by_name[before[0]]).__name__
            if kind == "InputLayer":
                return "input_quantizer"
            if kind not in PASS_THROUGH and before[0] not in fold:
                return before[0]
            before = writers[before[0]]
        return None

    def clone(layer):
        kind, config = type(layer).__name__, layer.get_config()
        if layer.name in fold:
            return FoldedBatchNorm(name=layer.name)
        if kind in ROUNDS_ON_INPUT_RANGE:
            return QuantizedOutput(keras.layers.serialize(layer), follows=range_source(layer.name), name=layer.name)
        if kind in QUANTIZED_OPS:
            fused_later = activation_of(layer) == "linear" and relu_follows(layer.name)
            return FakeQuantOp(kind, config, quantize_output=not fused_later, name=layer.name)
        if kind in FUSES_RELU and relu_follows(layer.name):  # quantized once, after the ReLU it feeds
            return layer.__class__.from_config(config)
        if kind in OUTPUT_QUANTIZED:
            return QuantizedOutput(keras.layers.serialize(layer), softmax=activation_of(layer) in FIXED_RANGE,
                                   name=layer.name)
        return layer.__class__.from_config(config)

    inner = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:  # (the input layer is renamed by the clone)
            continue
        twin = inner.get_layer(layer.name)
        if isinstance(twin, FakeQuantOp):
            bn = by_name.get(folded_into.get(layer.name, ""))
            kernel, bias = _folded(layer, bn)
            twin.kernel.assign(kernel)
            twin.bias.assign(bias)
        elif isinstance(twin, QuantizedOutput):
            twin.inner.set_weights(layer.get_weights())
    inputs = keras.Input(shape=model.input_shape[1:], name="input")
    quantized_input = ActivationQuantizer(name="input_quantizer")(inputs)
    qat_model = keras.Model(inputs, inner(quantized_input), name=f"{model.name}_qat")
    _tie(qat_model)
    return QatModel(qat_model, len(quantizers(qat_model)), sorted(fold))


def _tie(model) -> None:
    from pipeline.core.fake_quant import tie_ranges

    tie_ranges(model)


def quantizers(qat_model) -> list:
    """Every activation quantizer of a fake-quant model, in layer order."""
    from pipeline.core.fake_quant import ActivationQuantizer

    found = []

    def walk(layer):
        if isinstance(layer, ActivationQuantizer):
            found.append(layer)
        for child in getattr(layer, "layers", None) or []:
            walk(child)
        for attribute in ("logits_quantizer", "output_quantizer", "quantizer"):
            child = getattr(layer, attribute, None)
            if child is not None and child not in found:
                found.append(child)

    for layer in qat_model.layers:
        walk(layer)
    return found


def calibrate(qat_model, samples: np.ndarray, batch_size: int = 64) -> None:
    """Each trainable range set to the min and max its tensor takes on ``samples`` (what
    post-training int8 calibration uses), fixed ranges (softmax's) kept."""
    trainable = [q for q in quantizers(qat_model) if q.trainable]
    for quantizer in trainable:
        quantizer.observing, quantizer.seen = True, None
    try:
        for start in range(0, len(samples), batch_size):
            qat_model(samples[start:start + batch_size], training=False)  # eager: the quantizers observe
    finally:
        for quantizer in trainable:
            quantizer.observing = False
    for quantizer in trainable:
        if quantizer.seen is not None:
            quantizer.set_range(*quantizer.seen)
    _tie(qat_model)
