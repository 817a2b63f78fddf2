"""Fake-quant layers: each supported pattern converts to an int8 graph that computes what the
fake-quant model computes (within the rounding of integer kernels), and a fake-quant model
saved and loaded gives the same outputs (verify loads it as a reference)."""
import numpy as np
import pytest


def _patterns():
    from keras import layers

    def residual(x):
        return layers.Activation("relu")(layers.Add()([layers.Conv2D(4, 3, padding="same")(x), x]))

    return {
        "conv": lambda x: layers.Conv2D(6, 3, padding="same")(x),
        "conv stride 2 relu": lambda x: layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x),
        "depthwise": lambda x: layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x),
        "depthwise stride 2": lambda x: layers.DepthwiseConv2D(3, strides=2, padding="same")(x),
        "batchnorm folded, relu layer": lambda x: layers.ReLU()(layers.BatchNormalization()(
            layers.Conv2D(6, 3, padding="same", use_bias=False)(x))),
        "global average pool": lambda x: layers.GlobalAveragePooling2D()(layers.Conv2D(6, 3, padding="same")(x)),
        "average pool": lambda x: layers.Flatten()(layers.AveragePooling2D(4)(
            layers.Conv2D(4, 3, padding="same", activation="relu")(x))),
        "add then relu": residual,
        "dense softmax": lambda x: layers.Dense(5, activation="softmax")(layers.Flatten()(x)),
    }


def _model(pattern: str):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, _patterns()[pattern](inputs))
    if any(type(layer).__name__ == "BatchNormalization" for layer in model.layers):  # non-trivial statistics
        batchnorm = next(layer for layer in model.layers if type(layer).__name__ == "BatchNormalization")
        rng = np.random.default_rng(1)
        batchnorm.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.2, 6), rng.normal(0, 0.3, 6),
                               rng.uniform(0.5, 2.0, 6)])
    return model


@pytest.mark.parametrize("pattern", list(_patterns()))
def test_each_pattern_converts_to_int8_and_computes_what_the_fake_quant_model_does(pattern):
    from ai_edge_litert.interpreter import Interpreter

    from pipeline.formats.tflite import fake_quant_to_tflite, float_ops
    from pipeline.optimizing import qat

    samples = np.random.default_rng(0).normal(size=(120, 8, 8, 4)).astype(np.float32)
    built = qat.build(_model(pattern))
    qat.calibrate(built.model, samples)
    expected = built.model.predict(samples, verbose=0)
    content = fake_quant_to_tflite(built.model)
    assert float_ops(content) == []
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    feed, fetch = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (in_scale, in_zero), (out_scale, out_zero) = feed["quantization"], fetch["quantization"]
    got = []
    for sample in samples:
        interpreter.set_tensor(feed["index"], np.clip(np.floor(sample[None] / in_scale + in_zero + 0.5), -128, 127)
                               .astype(np.int8))
        interpreter.invoke()
        got.append((interpreter.get_tensor(fetch["index"])[0].astype(np.float32) - out_zero) * out_scale)
    # Every op rounds once where its int8 kernel rounds (the average pool's mean included, on its
    # input's scale); the kernels' integer bias and requantization may round a tie the other
    # way: one output step at most, and rarely (measured: mean 0.049 steps, the average pool).
    # The int8 softmax approximates exp in fixed point: measured 2 steps at most, mean 0.005.
    steps = np.abs(np.asarray(got) - expected) / out_scale
    assert float(np.max(steps)) <= (2 if "softmax" in pattern else 1) + 1e-4, pattern
    assert float(np.mean(steps)) <= 0.1, pattern


def test_a_saved_fake_quant_model_loads_safely_and_computes_the_same(tmp_path):
    import keras

    import pipeline.core.fake_quant  # noqa: F401  (registers the layers)
    from pipeline.core.modelio import load_model, save_model
    from pipeline.optimizing import qat

    inputs = keras.Input((8, 8, 4))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.DepthwiseConv2D(3, padding="same")(inputs)))
    x = keras.layers.Activation("relu")(keras.layers.Add()([keras.layers.Conv2D(4, 1)(x), inputs]))
    x = keras.layers.AveragePooling2D(2)(x)  # rounds on its input's range: a tie, saved as a copy
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    built = qat.build(keras.Model(inputs, outputs))
    samples = np.random.default_rng(0).normal(size=(16, 8, 8, 4)).astype(np.float32)
    qat.calibrate(built.model, samples)
    path = save_model(built.model, tmp_path / "model_qat.keras")
    loaded = load_model(path, unsafe=False)  # registered layers: no code of the file's own runs
    np.testing.assert_array_equal(loaded.predict(samples, verbose=0), built.model.predict(samples, verbose=0))
    assert len(built.folded_batchnorms) == 1  # the BatchNorm after the depthwise conv
