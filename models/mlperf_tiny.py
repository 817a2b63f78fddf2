"""MLPerf Tiny reference architectures: DS-CNN (KWS), ResNet-8 (IC), MobileNetV1 (VWW)."""
from __future__ import annotations

from models.registry import register_model

# Keras' default BatchNormalization momentum (0.99) averages over ~100 recent batches: on a
# digits-sized data set that is several epochs, so after a short training the moving
# statistics still describe the random initialisation and inference runs at chance.
# 0.9 (~10 batches) keeps up; the pipeline also re-estimates them after every fit.
BN_MOMENTUM = 0.9


def _conv_bn_relu(x, filters, kernel, strides=1):
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU()(x)


def _depthwise_bn_relu(x, strides=1):
    from keras import layers

    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU()(x)


@register_model("ds_cnn")
def ds_cnn(input_shape, num_classes, filters=64, blocks=4):
    """DS-CNN for keyword spotting (MLPerf Tiny KWS): a strided conv, then depthwise-separable blocks."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    kernel = (min(10, input_shape[0]), min(4, input_shape[1]))
    x = _conv_bn_relu(inputs, filters, kernel, strides=2)
    for _ in range(blocks):
        x = _depthwise_bn_relu(x)
        x = _conv_bn_relu(x, filters, 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


@register_model("resnet8")
def resnet8(input_shape, num_classes, filters=(16, 32, 64)):
    """ResNet-8 for image classification (MLPerf Tiny IC): three residual stacks with adds."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, filters[0], 3)
    for stack, width in enumerate(filters):
        strides = 1 if stack == 0 else 2
        y = _conv_bn_relu(x, width, 3, strides=strides)
        y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM)(y)
        shortcut = x
        if stack > 0:
            shortcut = layers.Conv2D(width, 1, strides=strides, padding="same")(x)
        x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet8")


# (filters, stride) of MobileNetV1's 13 depthwise-separable blocks.
_MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                     (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


# Measured on digits (360 test images, seeds 0/1/2, 15 epochs): RMSprop 1e-3 reaches
# 0.775/0.867/0.839, Adam 3e-3 0.836/0.886/0.872: thirteen depthwise blocks learn faster with Adam.
@register_model("mobilenet_v1", recipe={"optimizer": "adam", "learning_rate": 3e-3})
def mobilenet_v1(input_shape, num_classes, alpha=0.25):
    """MobileNetV1 with width multiplier ``alpha`` (MLPerf Tiny visual wake words uses 0.25)."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, max(8, int(32 * alpha)), 3, strides=2)
    for filters, strides in _MOBILENET_BLOCKS:
        x = _depthwise_bn_relu(x, strides=strides)
        x = _conv_bn_relu(x, max(8, int(filters * alpha)), 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1")
