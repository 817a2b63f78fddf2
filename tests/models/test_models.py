"""Every zoo model builds for the data, trains an epoch, and converts with builtin ops only."""
import numpy as np
import pytest

import models
from edge_runtime import load
from pipeline.formats.tflite import to_tflite


@pytest.fixture(scope="module")
def small_digits():
    from pipeline.data.loaders import load_dataset

    return load_dataset("digits", image_size=16)


def _fit_one_epoch(name, dataset):
    import keras

    keras.utils.set_random_seed(0)
    x, y = dataset.split("train")
    model = models.build_model(name, dataset.input_shape, dataset.num_classes)
    task = models.get_model_spec(name).task
    loss = "sparse_categorical_crossentropy" if task == "classifier" else "mse"
    model.compile(optimizer="adam", loss=loss)
    model.fit(x[:512], y[:512] if task == "classifier" else x[:512], epochs=1, batch_size=32, verbose=0)
    return model


def _write(tmp_path, name, flatbuffer):
    path = tmp_path / name
    path.write_bytes(flatbuffer)
    return path


def test_registry_rejects_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="registered twice"):
        models.register_model("mnist_cnn")(lambda shape, classes: None)
    with pytest.raises(ValueError, match="lower-case identifier"):
        models.register_model("Bad-Name")


def test_unknown_model_suggests_closest():
    from pipeline.core.errors import UsageError
    from pipeline.core.recipes import zoo_spec

    with pytest.raises(models.UnknownModelError, match="unknown model 'resnet'"):
        models.get_model_spec("resnet")
    with pytest.raises(UsageError, match="Did you mean 'resnet8'"):
        zoo_spec("resnet")


def test_the_zoo_does_not_import_the_pipeline():
    import subprocess
    import sys

    code = "import sys, models; models.model_names(); print(any(m.startswith('pipeline') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("name", models.model_names())
def test_zoo_model_trains_and_converts(name, small_digits, tmp_path):
    model = _fit_one_epoch(name, small_digits)
    x_test, _ = small_digits.split("test")
    expected = model.predict(x_test[:16], verbose=0)

    float_runner = load(_write(tmp_path, "f32.tflite", to_tflite(model, "float32")))
    assert float_runner.input.shape == (1, *small_digits.input_shape)
    np.testing.assert_allclose(float_runner.predict(x_test[:16]), expected, atol=1e-4)
    assert not any(op.startswith("FLEX") or op == "CUSTOM" for op in float_runner.op_names())

    if models.get_model_spec(name).task != "classifier":
        return
    x_train, _ = small_digits.split("train")
    int8 = load(_write(tmp_path, "int8.tflite", to_tflite(model, "int8", calibration=x_train[:100])))
    assert int8.input.dtype == "int8" and int8.outputs[0].dtype == "int8"
    probabilities = int8.predict(x_test[:16])
    # dequantized softmax: rows still sum to one within int8 resolution
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.05)
    # After one short epoch the outputs are nearly flat, so top-1 agreement is noise here;
    # the probabilities themselves must stay within a few int8 steps of Keras'.
    mean_error = np.abs(probabilities - expected).mean()
    assert mean_error <= 0.03, f"{name}: int8 mean abs error {mean_error:.4f}"
