import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.fsutil import read_json, sha256_file

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_default_training_reaches_97_percent(trained_run):
    metrics = trained_run.metrics
    assert metrics["test_accuracy"] >= 0.97, metrics["test_accuracy"]
    for key in ("test_loss", "epochs_run", "train_seconds", "samples_per_second"):
        assert metrics[key] is not None
    assert metrics["epochs_run"] == 15 and metrics["backend"] == "tensorflow"
    assert metrics["data"]["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert len(metrics["history"]["val_accuracy"]) == 15


def test_run_directory_contract(trained_run):
    run_dir = trained_run.run_dir
    assert (run_dir / "model.keras").is_file()
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["artifacts"]["model.keras"] == sha256_file(run_dir / "model.keras")
    assert manifest["seed"] == 0 and len(manifest["dataset_sha256"]) == 64
    assert manifest["versions"]["tensorflow"].startswith("2.21")
    assert "train" in manifest["stages"]
    latest = run_dir.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    assert not list(run_dir.glob("**/*.tmp"))


def test_cli_train_then_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--model", "mlp", "--epochs", "1", "--quiet", "--out", "runs/a")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    train_json = read_json(tmp_path / "runs/a/train.json")
    assert train_json["epochs_run"] == 1
    assert (tmp_path / "runs/latest").resolve() == (tmp_path / "runs/a").resolve()
    resumed = invoke("train", "--model", "mlp", "--epochs", "3", "--quiet", "--resume")
    assert resumed.exit_code == 0, resumed.output
    train_json = read_json(tmp_path / "runs/a/train.json")
    assert train_json["epochs_run"] == 3 and len(train_json["history"]["loss"]) == 3


def _weights_after_one_epoch(tmp_path, name):
    result = invoke("train", "--model", "lenet5", "--epochs", "1", "--quiet", "--seed", "7",
                    "--out", tmp_path / name)
    assert result.exit_code == 0, result.output
    import keras

    return keras.models.load_model(tmp_path / name / "model.keras").get_weights()


def test_same_seed_gives_same_weights(tmp_path):
    first = _weights_after_one_epoch(tmp_path, "a")
    second = _weights_after_one_epoch(tmp_path, "b")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_training_options(tmp_path):
    result = invoke("train", "--model", "mnist_cnn", "--epochs", "2", "--quiet", "--optimizer", "adam",
                    "--lr-schedule", "plateau", "--early-stopping", "1", "--class-weight", "balanced",
                    "--augment", "--tensorboard", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "r" / "logs").rglob("*tfevents*"))
    assert read_json(tmp_path / "r" / "train.json")["config"]["augment"] is True


@pytest.mark.parametrize("args, message, code", [
    (["--model", "mnist_cn"], "unknown model 'mnist_cn'. Did you mean 'mnist_cnn'?", 2),
    (["--dataset", "digts"], "unknown data set 'digts'. Did you mean 'digits'?", 2),
    (["--optimizer", "adamw"], "unknown optimizer 'adamw'. Did you mean 'adam'?", 2),
    (["--epochs", "0"], "--epochs and --batch-size must be at least 1", 2),
    (["--distribute", "multiworker"], "--distribute multiworker needs TF_CONFIG", 2),
])
def test_bad_options_give_one_line(tmp_path, args, message, code, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = invoke("train", *args, "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_bad_data_gives_one_line(tmp_path):
    corrupt = tmp_path / "bad.npz"
    corrupt.write_bytes(b"garbage")
    result = invoke("train", "--dataset", f"npz:{corrupt}", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 3 and "is not a readable .npz archive" in result.stderr
    labels = tmp_path / "labels.npz"
    np.savez(labels, x_train=np.zeros((20, 4)), y_train=np.arange(20) % 2,
             x_test=np.zeros((4, 4)), y_test=np.array([0, 1, 0, -3]))
    result = invoke("train", "--model", "mlp", "--dataset", f"npz:{labels}", "--out", tmp_path / "r")
    assert result.exit_code == 3 and "y_test has label -3" in result.stderr


def test_user_model_with_wrong_input_shape(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "mine.keras")
    result = invoke("train", "--model", tmp_path / "mine.keras", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 4
    assert "expects input shape (32, 32, 3), the data has (28, 28, 1)" in result.stderr


def test_user_model_is_fine_tuned(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "mine.keras")
    result = invoke("train", "--model", tmp_path / "mine.keras", "--epochs", "2", "--quiet",
                    "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert read_json(tmp_path / "r" / "train.json")["test_accuracy"] > 0.8


def test_mixed_precision_saves_a_float32_model(tmp_path):
    import keras

    try:
        result = invoke("train", "--model", "mlp", "--epochs", "1", "--quiet", "--mixed-precision",
                        "--out", tmp_path / "r")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert result.exit_code == 0, result.output
    saved = json.dumps(keras.models.load_model(tmp_path / "r" / "model.keras").get_config())
    assert "mixed_float16" not in saved
