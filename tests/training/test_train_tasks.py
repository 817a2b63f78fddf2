"""Training a model that is not a classifier: --task on a model file, standardized vectors, and
a zoo model asked for a task its head cannot do."""
import json

import numpy as np

from tests.hostile.helpers import invoke, one_error_line


def _mass(tmp_path):
    """16 features on scales from 0.1 to 100 (standardization matters), a linear target."""
    rng = np.random.default_rng(0)
    scales = np.logspace(-1, 2, 16)
    x = (rng.normal(size=(1800, 16)) * scales + 3 * scales).astype(np.float32)
    y = ((x - 3 * scales) / scales @ rng.normal(size=(16, 1)) + 0.05 * rng.normal(size=(1800, 1))).astype(np.float32)
    np.savez(tmp_path / "mass.npz", x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:],
             preprocessing="standardize")
    return x, y


def test_a_model_file_trains_as_a_regression_on_standardized_vectors(tmp_path):
    import keras

    x, y = _mass(tmp_path)
    inputs = keras.Input((16,))
    keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(32, activation="relu")(inputs))).save(
        tmp_path / "untrained.keras")
    result = invoke("train", "--model", tmp_path / "untrained.keras", "--task", "regression", "--dataset",
                    f"npz:{tmp_path / 'mass.npz'}", "--epochs", "30", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["task"] == "regression" and info["test_metric"]["metric"] == "mae"
    spec = info["data"]["preprocessing"]
    train_part = x[:1400]
    # per feature, from the training part of x_train (the validation split is drawn from it)
    assert len(spec["mean"]) == 16 and abs(spec["mean"][15] - train_part[:, 15].mean()) < 0.1 * spec["std"][15]
    # it learned: well under the error of predicting the training mean
    baseline = float(np.mean(np.abs(y[1400:] - y[:1400].mean())))
    assert info["test_metric"]["value"] < 0.5 * baseline


def test_a_zoo_model_asked_for_another_task_is_one_line(tmp_path):
    _mass(tmp_path)
    line = one_error_line(invoke("train", "--model", "mnist_cnn", "--task", "regression", "--dataset",
                                 f"npz:{tmp_path / 'mass.npz'}", "--out", tmp_path / "run"), 2)
    assert "zoo model 'mnist_cnn' is a classifier model, not a regression" in line
    assert not (tmp_path / "run").exists()
    line = one_error_line(invoke("train", "--model", "mnist_cnn", "--dataset", "digits-anomaly:0",
                                 "--out", tmp_path / "run"), 3)
    assert "is for a reconstruction model, not a classifier" in line
