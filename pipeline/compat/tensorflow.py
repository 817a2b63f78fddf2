"""The one place that touches TensorFlow internals: private converter switches with no public
equivalent. ``tests/compat/test_compat.py`` checks each one, so an upgrade that drops it fails there."""
from __future__ import annotations

from pipeline.core.errors import ConversionError

# TFLiteConverter's switch for per-tensor (not per-channel) dynamic-range Dense weights.
_PER_TENSOR_DENSE = "_experimental_disable_per_channel_quantization_for_dense_layers"


def per_tensor_dense_weights(converter) -> None:
    """Quantize Dense weights per tensor: tflite-runtime 2.14 lacks the FULLY_CONNECTED
    version that per-channel dynamic-range weights need."""
    if not hasattr(converter, _PER_TENSOR_DENSE):
        raise ConversionError("this TensorFlow's converter has no per-tensor Dense switch: "
                              "--compat tflite-runtime is unavailable with it")
    setattr(converter, _PER_TENSOR_DENSE, True)
