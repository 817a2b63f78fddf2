"""Re-estimating BatchNormalization's moving statistics after training.

Keras keeps an exponential moving average of each batch's mean and variance (momentum 0.99
by default). After a short training run that average still remembers the random-init
activations, so a model with 99% training accuracy can sit at chance in inference mode.
The cure used by PyTorch's ``torch.optim.swa_utils.update_bn`` and by pruning toolkits is
to recompute the statistics with the final weights: one pass over training data in
training mode, averaging every batch's statistics with equal weight.
"""
from __future__ import annotations

import numpy as np

# Enough samples for stable per-channel statistics; larger training sets are subsampled.
MAX_SAMPLES = 8192
BATCH_SIZE = 256


def batchnorm_layers(model) -> list:
    """The trainable BatchNormalization layers of ``model``, nested models included."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batchnorm_layers(layer))
    return found


def recalibrate_batchnorm(model, x: np.ndarray, *, seed: int = 0) -> int:
    """Replace every BatchNorm layer's moving mean/variance by their average over ``x``.

    Returns the number of layers recalibrated (0 when the model has none: nothing runs).
    Batch ``k`` is blended in with weight ``1/k`` (momentum ``(k-1)/k``), which makes the
    result the plain average of all batches' statistics, whatever the layer's own momentum.
    """
    layers = batchnorm_layers(model)
    if not layers or not len(x):
        return 0
    if len(x) > MAX_SAMPLES:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), MAX_SAMPLES, replace=False))]
    momenta = [layer.momentum for layer in layers]
    try:
        for batch, start in enumerate(range(0, len(x), BATCH_SIZE)):
            for layer in layers:
                layer.momentum = batch / (batch + 1)  # 0 for the first batch: its stats replace
            model(x[start:start + BATCH_SIZE], training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)
