"""Fake-quantized Keras layers for quantization-aware training, computed the way TFLite's int8
kernels compute: weights symmetric and narrow-range, per output channel (Conv2D,
DepthwiseConv2D, and Dense on a flat input computed as a 1x1 convolution: the converter's own
int8 is per channel there too), activations per tensor, asymmetric, after the fused
activation, each with a trainable range. ``keras.quantizers.fake_quant_with_min_max_vars`` has a
straight-through gradient; on the TensorFlow backend it is ``tf.quantization.fake_quant_*``,
which the TFLite converter folds into int8 kernels (from a frozen graph).

Registered under ``pipeline>``: a saved fake-quant model (``model_qat.keras``) loads with no
code of its own. Importing this module imports Keras."""
from __future__ import annotations

import keras
from keras import ops
from keras.quantizers import fake_quant_with_min_max_vars

BITS = 8
# TFLite's int8 softmax output: scale 1/256, zero point -128.
SOFTMAX_RANGE = (0.0, 255.0 / 256.0)


def _constant(value):
    return keras.initializers.Constant(value)


@keras.saving.register_keras_serializable(package="pipeline")
class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor int8 fake quantization with a trainable range (``trainable=False`` for a
    range the kernel fixes, such as softmax's). ``observing`` (eager calls only) passes values
    through and widens the range to what it sees: calibration."""

    def __init__(self, minimum: float = 0.0, maximum: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_range = (float(minimum), float(maximum))
        self.observing = False
        self.seen: tuple[float, float] | None = None
        self._source = None  # a weak reference: a tied quantizer is not a sublayer

    def tie(self, source: ActivationQuantizer) -> None:
        """Compute with ``source``'s range (trained through both uses) and hold a copy of it,
        so that a saved model computes the same without the tie."""
        import weakref

        self._source = weakref.ref(source)
        self.minimum.assign(source.minimum)
        self.maximum.assign(source.maximum)

    def _range(self):
        source = self._source() if self._source is not None else None
        return (source.minimum, source.maximum) if source is not None else (self.minimum, self.maximum)

    def build(self, input_shape):
        self.minimum = self.add_weight(shape=(), initializer=_constant(self.initial_range[0]), name="minimum",
                                       trainable=self.trainable)
        self.maximum = self.add_weight(shape=(), initializer=_constant(self.initial_range[1]), name="maximum",
                                       trainable=self.trainable)

    def call(self, inputs):
        if self.observing:
            low, high = float(ops.min(inputs)), float(ops.max(inputs))
            self.seen = (low, high) if self.seen is None else (min(self.seen[0], low), max(self.seen[1], high))
            return inputs
        minimum, maximum = self._range()
        return fake_quant_with_min_max_vars(inputs, minimum, maximum, num_bits=BITS)

    def set_range(self, minimum: float, maximum: float) -> None:
        """The range a calibration found, widened to hold 0 (int8 represents 0 exactly)."""
        minimum, maximum = min(float(minimum), 0.0), max(float(maximum), 0.0)
        if maximum - minimum < 1e-6:
            maximum = minimum + 1e-6
        self.minimum.assign(minimum)
        self.maximum.assign(maximum)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "minimum": self.initial_range[0], "maximum": self.initial_range[1]}


def _per_channel(kernel, axis: int):
    """Symmetric narrow-range int8 fake quantization of a kernel, per channel along ``axis``
    (no reshape: the converter follows the quantized dimension only on the kernel itself)."""
    reduce = tuple(i for i in range(len(kernel.shape)) if i != axis % len(kernel.shape))
    limit = ops.maximum(ops.max(ops.abs(kernel), axis=reduce), 1e-8)
    return fake_quant_with_min_max_vars(kernel, -limit, limit, num_bits=BITS, narrow_range=True, axis=axis)


def _per_tensor(kernel):
    limit = ops.maximum(ops.max(ops.abs(kernel)), 1e-8)
    return fake_quant_with_min_max_vars(kernel, -limit, limit, num_bits=BITS, narrow_range=True)


@keras.saving.register_keras_serializable(package="pipeline")
class FakeQuantOp(keras.layers.Layer):
    """A Conv2D, DepthwiseConv2D or Dense (``layer_config``, BatchNorm already folded into its
    weights) computed with fake-quantized weights, then its activation, then, when
    ``quantize_output`` (its output is not fed only to an activation layer that quantizes
    after itself, as the converter fuses it), its output's ActivationQuantizer. A softmax
    activation is quantized before (the logits) and after (softmax's fixed range)."""

    def __init__(self, layer_class: str, layer_config: dict, quantize_output: bool = True,
                 output_range: tuple[float, float] = (0.0, 1.0), logits_range: tuple[float, float] = (-1.0, 1.0),
                 **kwargs):
        super().__init__(**kwargs)
        if layer_class not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            raise ValueError(f"no fake-quantized form of {layer_class}")
        self.layer_class, self.layer_config = layer_class, dict(layer_config)
        for key in ("kernel_size", "strides", "dilation_rate"):  # lists once saved: the ops take tuples
            if isinstance(self.layer_config.get(key), (list, tuple)):
                self.layer_config[key] = tuple(self.layer_config[key])
        self.quantize_output = quantize_output
        self.output_range, self.logits_range = tuple(output_range), tuple(logits_range)
        self.activation_name = keras.activations.serialize(keras.activations.get(self.layer_config.get("activation")))
        if isinstance(self.activation_name, dict):
            self.activation_name = self.activation_name.get("config", {}).get("name", "linear")
        self.activation = keras.activations.get(self.layer_config.get("activation"))
        softmax = self.activation_name == "softmax"
        self.logits_quantizer = ActivationQuantizer(*self.logits_range, name="logits") if softmax else None
        self.output_quantizer = None
        if quantize_output:
            self.output_quantizer = (ActivationQuantizer(*SOFTMAX_RANGE, name="output", trainable=False) if softmax
                                     else ActivationQuantizer(*self.output_range, name="output"))

    def build(self, input_shape):
        channels = input_shape[-1]
        config = self.layer_config
        self._flat_input = len(input_shape) == 2  # Dense: computed as a per-channel 1x1 convolution
        if self.layer_class == "Dense":
            shape = (channels, config["units"])
        elif self.layer_class == "Conv2D":
            shape = (*config["kernel_size"], channels, config["filters"])
        else:
            shape = (*config["kernel_size"], channels, config.get("depth_multiplier", 1))
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(shape[-1] if self.layer_class != "DepthwiseConv2D"
                                           else channels * shape[-1],), initializer="zeros", name="bias")
        for quantizer in (self.logits_quantizer, self.output_quantizer):
            if quantizer is not None:
                quantizer.build(None)

    def quantized_kernel(self):
        if self.layer_class == "Dense" and self._flat_input:  # the 1x1 convolution's kernel, per channel
            return _per_channel(ops.reshape(self.kernel, (1, 1, *self.kernel.shape)), -1)
        if self.layer_class == "Conv2D":
            return _per_channel(self.kernel, -1)  # per output channel, as the converter's own int8
        if self.layer_class == "DepthwiseConv2D" and self.kernel.shape[-1] == 1:  # one output per input channel
            return _per_channel(self.kernel, -2)
        return _per_tensor(self.kernel)

    def call(self, inputs, mask=None):
        config, kernel = self.layer_config, self.quantized_kernel()
        if self.layer_class == "Dense" and len(inputs.shape) == 2:
            # As a 1x1 convolution: the converter keeps a per-channel kernel there (a per-channel
            # FULLY_CONNECTED kernel would need a transpose of its quantized axis, which it refuses).
            outputs = ops.conv(ops.reshape(inputs, (-1, 1, 1, inputs.shape[-1])), kernel, strides=1, padding="valid")
            outputs = ops.reshape(outputs, (-1, kernel.shape[-1]))
        elif self.layer_class == "Dense":
            outputs = ops.matmul(inputs, kernel)
        elif self.layer_class == "Conv2D":
            outputs = ops.conv(inputs, kernel, strides=config["strides"], padding=config["padding"],
                               data_format=config.get("data_format"), dilation_rate=config["dilation_rate"])
        else:
            outputs = ops.depthwise_conv(inputs, kernel, strides=config["strides"], padding=config["padding"],
                                         data_format=config.get("data_format"), dilation_rate=config["dilation_rate"])
        outputs = outputs + self.bias
        if self.logits_quantizer is not None:
            outputs = self.logits_quantizer(outputs)
        outputs = self.activation(outputs)
        if self.output_quantizer is not None:
            outputs = self.output_quantizer(outputs)
        return outputs

    def quantizers(self) -> list[ActivationQuantizer]:
        return [q for q in (self.logits_quantizer, self.output_quantizer) if q is not None]

    def get_config(self):
        return {**super().get_config(), "layer_class": self.layer_class, "layer_config": self.layer_config,
                "quantize_output": self.quantize_output, "output_range": list(self.output_range),
                "logits_range": list(self.logits_range)}


def _takes_training(layer) -> bool:
    import inspect

    return "training" in inspect.signature(layer.call).parameters


@keras.saving.register_keras_serializable(package="pipeline")
class QuantizedOutput(keras.layers.Layer):
    """A layer of the model as it was (an activation, an add, a pooling that averages), with its
    output fake-quantized: the point where the converter gives the tensor its own scale. With
    ``follows`` (the name of the layer whose quantized output it reads), the output is rounded
    on that layer's range instead (``tie_ranges``): TFLite's int8 average pooling keeps its
    input's scale and rounds its mean to it."""

    def __init__(self, layer_config: dict, output_range: tuple[float, float] = (0.0, 1.0), softmax: bool = False,
                 follows: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.layer_config = layer_config
        self.output_range, self.softmax, self.follows = tuple(output_range), softmax, follows
        self.inner = keras.layers.deserialize(layer_config)
        self.quantizer = (ActivationQuantizer(*SOFTMAX_RANGE, name="output", trainable=False) if softmax
                          else ActivationQuantizer(*self.output_range, name="output", trainable=follows is None))

    def build(self, input_shape):
        if not self.inner.built:
            self.inner.build(input_shape)
        self.quantizer.build(None)

    def call(self, inputs, mask=None, training=None):  # the graph may pass what the layer it replaces took
        return self.quantizer(self.inner(inputs, training=training) if _takes_training(self.inner)
                              else self.inner(inputs))

    def quantizers(self) -> list[ActivationQuantizer]:
        return [self.quantizer]

    def get_config(self):
        return {**super().get_config(), "layer_config": self.layer_config, "output_range": list(self.output_range),
                "softmax": self.softmax, "follows": self.follows}


def output_quantizer(layer) -> ActivationQuantizer | None:
    """The quantizer of a fake-quant layer's output (None where its output is not quantized)."""
    if isinstance(layer, FakeQuantOp):
        return layer.output_quantizer
    if isinstance(layer, QuantizedOutput):
        return layer.quantizer
    return layer if isinstance(layer, ActivationQuantizer) else None


def tie_ranges(model) -> None:
    """Tie every ``QuantizedOutput`` that follows another layer's range to that range (after
    building, after loading a model to train it further, and before saving: the copy it holds
    is then current)."""
    layers = {}

    def walk(layer):
        layers[layer.name] = layer
        for child in getattr(layer, "layers", None) or []:
            walk(child)

    walk(model)
    for layer in layers.values():
        if isinstance(layer, QuantizedOutput) and layer.follows:
            source = output_quantizer(layers.get(layer.follows))
            if source is None:
                raise ValueError(f"{layer.name} follows {layer.follows}, which has no quantized output")
            layer.quantizer.tie(source)


@keras.saving.register_keras_serializable(package="pipeline")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a BatchNormalization was: folded into the op before it, it passes values through."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
