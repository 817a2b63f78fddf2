import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.fsutil import read_json, sha256_file

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_default_training_records_what_it_did(trained_run):
    metrics = trained_run.metrics  # its accuracy floor: tests/training/test_zoo_accuracy.py
    for key in ("test_loss", "epochs_run", "train_seconds", "samples_per_second",
                "first_epoch_seconds", "steady_epoch_seconds"):
        assert metrics[key] is not None
    assert len(metrics["epoch_seconds"]) == 15
    assert metrics["epochs_run"] == 15 and metrics["backend"] == "tensorflow"
    assert metrics["config"]["optimizer"] == "rmsprop" and metrics["config"]["epochs"] == 15
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
    from pipeline.core.fsutil import is_temporary

    assert not [p for p in run_dir.rglob("*") if is_temporary(p.name)]


def test_resume_keeps_learning_with_the_runs_own_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--model", "mlp", "--epochs", "3", "--seed", "3", "--quiet",
                    "--out", "runs/a")
    assert result.exit_code == 0, result.output
    first = read_json(tmp_path / "runs/a/train.json")
    assert (tmp_path / "runs/latest").resolve() == (tmp_path / "runs/a").resolve()
    # no --model, --dataset or --seed: the run's own are used
    resumed = invoke("train", "--resume", "--epochs", "6", "--quiet", "--run", "runs/a")
    assert resumed.exit_code == 0, resumed.output
    train_json = read_json(tmp_path / "runs/a/train.json")
    assert train_json["epochs_run"] == 6 and train_json["config"]["seed"] == 3
    assert train_json["data"]["sha256"] == first["data"]["sha256"]
    loss = train_json["history"]["loss"]
    assert loss[:3] == first["history"]["loss"]
    # The cosine schedule spans the new six epochs, so the rate after epoch 3 is not zero and
    # the loss keeps falling (measured: 0.358 at epoch 3, 0.237 at epoch 6; at rate zero it would stay at 0.36).
    assert loss[5] <= 0.8 * loss[2], loss


def test_resume_refuses_a_different_model(tmp_path):
    result = invoke("train", "--model", "mlp", "--epochs", "1", "--quiet", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    before = (tmp_path / "a" / "train.json").read_bytes()
    refused = invoke("train", "--resume", "--model", "lenet5", "--epochs", "2", "--run", tmp_path / "a")
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert lines == [f"error: cannot resume {tmp_path / 'a'} with --model lenet5 (the run has mlp): "
                     "a resumed run keeps its model, data and recipe; start a new run instead"]
    assert (tmp_path / "a" / "train.json").read_bytes() == before


def test_collapsed_training_is_flagged(tmp_path):
    result = invoke("train", "--model", "mlp", "--epochs", "2", "--learning-rate", "5", "--quiet",
                    "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "model collapsed" in warnings[0], result.stderr
    train_json = read_json(tmp_path / "r" / "train.json")
    assert train_json["collapsed"] is True and "chance level" in train_json["collapse_check"]["reason"]


def test_collapse_verdicts():
    from pipeline.training.collapse import judge

    labels = np.arange(100) % 10
    fine = judge(0.93, labels, {"loss": [0.3], "accuracy": [0.95]}, 10)
    assert fine["collapsed"] is False and fine["chance"] == 0.1
    batchnorm = judge(0.39, labels, {"loss": [0.05], "accuracy": [0.993]}, 10)
    assert batchnorm["collapsed"] and "BatchNormalization" in batchnorm["reason"]
    chance = judge(0.12, labels, {"loss": [2.3], "accuracy": [0.11]}, 10)
    assert chance["collapsed"] and "chance level" in chance["reason"]
    diverged = judge(0.1, labels, {"loss": [float("nan")]}, 10)
    assert diverged["collapsed"] and "NaN" in diverged["reason"]
    # imbalanced labels: always answering the majority class is the chance level
    assert judge(0.90, np.array([0] * 90 + [1] * 10), {"loss": [0.3]}, 2)["collapsed"]
    assert not judge(0.95, np.array([0] * 90 + [1] * 10), {"loss": [0.3]}, 2)["collapsed"]


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
    (["--epochs", "0"], "--epochs must lie in [1, 100000], got 0", 2),
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
    # a softmax regression after 2 epochs: 0.8639 measured; 0.8 leaves 23 of 360 images
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


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cluster_env(backend: str, index: int, addresses: list[str]) -> dict:
    if backend == "tensorflow":
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        return {"TF_CONFIG": json.dumps(tf_config)}
    return {"KERAS_DISTRIBUTION_JOB_ADDRESSES": ",".join(addresses),
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow"])  # jax: benchmarks/e2e/test_long_paths.py
def test_two_local_workers_train_one_run(backend, tmp_path):
    """Two processes on 127.0.0.1 (TensorFlow's MultiWorkerMirroredStrategy, or JAX's
    distributed runtime with Keras' DataParallel): both finish in step, only the chief writes
    the run, and that run goes on through quantize and verify."""
    import os
    import subprocess
    import sys

    if backend == "jax":
        pytest.importorskip("jax")
    addresses = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    cluster_variables = ("TF_CONFIG", "KERAS_DISTRIBUTION_JOB_ADDRESSES",
                         "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")
    clean = {k: v for k, v in os.environ.items() if k not in cluster_variables and k != "KERAS_BACKEND"}
    processes = []
    for index in range(2):
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "train", "--model", "mlp", "--epochs", "3",
             "--backend", backend, "--distribute", "multiworker", "--quiet", "--out", str(tmp_path / "run")],
            cwd=tmp_path, env={**clean, **_cluster_env(backend, index, addresses)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]
    chief, worker = (stdout for stdout, _ in outputs)
    assert str(tmp_path / "run") in chief and "this worker wrote nothing" in worker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "runs"]  # the worker left nothing
    train_json = read_json(tmp_path / "run" / "train.json")
    assert train_json["distribute"] == "multiworker" and train_json["backend"] == backend
    # both processes trained one model: they report the same test accuracy
    scores = [next(line for line in out.splitlines() if "test accuracy" in line).split(",")[0]
              for out in (chief, worker)]
    assert scores[0] == scores[1], scores
    # the MLP after 3 epochs, global batch 32: 0.9306 (tensorflow) and 0.9250 (jax) measured;
    # the floor 0.70 (chance is 0.10) leaves more than 80 of 360 images
    assert train_json["test_accuracy"] >= 0.70, train_json["test_accuracy"]
    from typer.testing import CliRunner

    from pipeline.cli import app

    for command in (["quantize", "--int8"], ["verify"]):  # in this process: the run is a normal one
        done = CliRunner().invoke(app, [*command, "--run", str(tmp_path / "run")])
        assert done.exit_code == 0, done.output[-2000:]
