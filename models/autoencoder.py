"""Fully-connected autoencoder for anomaly detection (MLPerf Tiny AD style)."""
from __future__ import annotations

import math

from models.registry import register_model


@register_model("autoencoder", task="reconstruction")
def autoencoder(input_shape, num_classes, hidden=128, bottleneck=8, depth=2):
    """Dense autoencoder (hidden x depth, bottleneck, mirrored), trained on reconstruction MSE."""
    import keras
    from keras import layers

    del num_classes  # an autoencoder reconstructs its input; labels only score anomalies
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    for _ in range(depth):
        x = layers.Dense(hidden, activation="relu")(x)
    x = layers.Dense(bottleneck, activation="relu")(x)
    for _ in range(depth):
        x = layers.Dense(hidden, activation="relu")(x)
    x = layers.Dense(math.prod(input_shape))(x)
    outputs = layers.Reshape(input_shape)(x)
    return keras.Model(inputs, outputs, name="autoencoder")


@register_model("ad_autoencoder", task="reconstruction",
                recipe={"epochs": 60, "optimizer": "adam", "batch_size": 32})
def ad_autoencoder(input_shape, num_classes, hidden=128, bottleneck=8, depth=4):
    """MLPerf Tiny's anomaly-detection autoencoder: dense 128x4, 8, 128x4 with BatchNorm and ReLU."""
    import keras
    from keras import layers

    del num_classes  # an autoencoder reconstructs its input; labels only score anomalies
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    for width in [hidden] * depth + [bottleneck] + [hidden] * depth:
        x = layers.Dense(width)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Dense(math.prod(input_shape))(x)
    outputs = layers.Reshape(input_shape)(x) if len(input_shape) > 1 else x
    return keras.Model(inputs, outputs, name="ad_autoencoder")
