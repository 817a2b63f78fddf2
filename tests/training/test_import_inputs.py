"""An imported model that scales its own input (the tutorial's ``Rescaling(1/255)`` first layer):
declared with ``--input-scale 1`` it imports at its own Keras accuracy and every artifact's
sidecar feeds the device raw pixels; undeclared, it is fed the data set's 1/255 twice and the
import says so in a warning, never a silent chance-level score."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def rescaling_model(tmp_path_factory):
    import keras

    from pipeline.data.loaders import load_dataset

    data = load_dataset("digits", seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(data.input_shape), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.x_train.astype("float32"), data.y_train, epochs=5, batch_size=64, verbose=0)
    own = float(np.mean(model.predict(data.x_test.astype("float32"), verbose=0).argmax(-1) == data.y_test))
    assert own > 0.85  # it learned, on raw pixels 0..255
    path = tmp_path_factory.mktemp("rescaling") / "rescaling.keras"
    model.save(path)
    return path, own


def test_declared_input_imports_at_the_models_own_accuracy(rescaling_model, tmp_path):
    path, own = rescaling_model
    result = runner.invoke(app, ["import", str(path), "--input-scale", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    train = json.loads((tmp_path / "run" / "train.json").read_text())
    assert train["test_accuracy"] == pytest.approx(own, abs=1e-6)
    assert train["data"]["preprocessing"]["scale"] == 1.0 and train["data"]["preprocessing"]["mean"] is None
    assert not train["collapse_check"]["collapsed"]
    quantized = runner.invoke(app, ["quantize", "--int8", "--no-recover", "--run", str(tmp_path / "run")])
    assert quantized.exit_code == 0, quantized.output
    sidecar = json.loads((tmp_path / "run" / "model_int8.tflite.json").read_text())
    assert sidecar["preprocessing"]["scale"] == 1.0  # the device feeds raw pixels
    verified = runner.invoke(app, ["verify", "--run", str(tmp_path / "run")])
    assert verified.exit_code == 0, verified.output


def test_undeclared_scaling_is_a_warning_that_names_the_layer(rescaling_model, tmp_path):
    path, _ = rescaling_model
    result = runner.invoke(app, ["import", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "run" / "train.json").read_text())
    check = train["collapse_check"]
    assert check["raw_input_accuracy"] > 0.85 and train["test_accuracy"] < check["raw_input_accuracy"] - 0.3
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, result.stderr
    assert warning[0].startswith("warning: the imported model scales its own input (rescaling) and scores ")
    assert warning[0].endswith("fed raw samples: pass --input-scale 1 --input-offset 0")


@pytest.mark.parametrize("args, message", [
    (["--input-scale", "0"], "--input-scale: must lie in (0, 1e+12], got 0.0"),
    (["--input-scale", "nan"], "--input-scale: must lie in (0, 1e+12], got nan"),
    (["--input-offset", "inf"], "--input-offset: must lie in [-1e+12, 1e+12], got inf"),
])
def test_bad_declared_input_is_one_error_line(rescaling_model, tmp_path, args, message):
    path, _ = rescaling_model
    result = runner.invoke(app, ["import", str(path), *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "run").exists()


def test_a_model_at_chance_is_a_warning_not_a_silent_score(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, kernel_initializer="zeros", activation="softmax")])
    model.save(tmp_path / "untrained.keras")  # every output equal: always class 0
    result = runner.invoke(app, ["import", str(tmp_path / "untrained.keras"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "chance is" in warning[0] and "it is fed raw * 0.00392157" in warning[0]
    assert json.loads((tmp_path / "run" / "train.json").read_text())["collapse_check"]["collapsed"]
