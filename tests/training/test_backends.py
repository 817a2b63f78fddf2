"""Training under jax (and torch where it is installed), converting under TensorFlow."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[2]


def _train(tmp_path, backend, *args, importtime=False):
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "pipeline.cli",
               "train", "--backend", backend, "--quiet", "--out", str(tmp_path / backend), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / backend, done


def _tflite_matches_keras(run_dir, tmp_path):
    import keras

    from edge_runtime import load
    from pipeline.data.context import RunContext
    from pipeline.formats.tflite import to_tflite

    context = RunContext(run_dir)
    model = context.load_model()
    x_test, _ = context.dataset.split("test")
    path = tmp_path / f"{run_dir.name}.tflite"
    path.write_bytes(to_tflite(model, "float32"))
    np.testing.assert_allclose(load(path).predict(x_test), model.predict(x_test, verbose=0), atol=1e-5)
    assert keras.backend.backend() == "tensorflow"


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    pytest.importorskip("jax")
    return _train(tmp_path_factory.mktemp("jax"), "jax")[0]


@pytest.mark.slow
def test_jax_trained_model_converts_and_passes_verify(jax_run, trained_run, tmp_path):
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import ConvertOptions, QuantizeOptions
    from pipeline.optimizing.convert import convert
    from pipeline.optimizing.quantize import quantize

    metrics = json.loads((jax_run / "train.json").read_text())
    assert metrics["backend"] == "jax" and metrics["devices"] and metrics["samples_per_second"] > 0
    tensorflow_accuracy = trained_run.metrics["test_accuracy"]
    # measured: both 0.9722; the bound allows 5 of 360 images of difference between backends
    assert abs(metrics["test_accuracy"] - tensorflow_accuracy) <= 5 / 360 + 1e-9, (metrics["test_accuracy"],
                                                                         tensorflow_accuracy)
    _tflite_matches_keras(jax_run, tmp_path)
    quantize(jax_run, QuantizeOptions(modes=["int8", "float16"]))
    convert(jax_run, ConvertOptions())
    assert verify(jax_run, VerifyOptions())["passed"]


def test_jax_data_parallel_and_mixed_precision_train_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    run_dir, done = _train(tmp_path, "jax", "--model", "mlp", "--epochs", "1", "--distribute", "mirrored",
                           "--mixed-precision", importtime=True)
    imported = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "no -X importtime output"
    assert not [line for line in imported if line.split("|")[-1].strip().startswith("tensorflow")]
    metrics = json.loads((run_dir / "train.json").read_text())
    assert metrics["distribute"] == "mirrored" and metrics["mixed_precision"] is True
    assert "mixed_float16" not in json.dumps(metrics)  # nothing of the policy leaked into the data
    _tflite_matches_keras(run_dir, tmp_path)


def test_torch_trained_model_converts(tmp_path):
    pytest.importorskip("torch")
    run_dir, _ = _train(tmp_path, "torch", "--model", "mlp", "--epochs", "1")
    assert json.loads((run_dir / "train.json").read_text())["backend"] == "torch"
    _tflite_matches_keras(run_dir, tmp_path)


def test_pipeline_run_trains_under_jax_in_a_child_process(tmp_path):
    pytest.importorskip("jax")
    from pipeline import load_config, run

    result = run(load_config(overrides=["train.backend=jax", "train.model=mlp", "train.epochs=2",
                                        "prune.sparsity=0", 'quantize.modes=["int8"]',
                                        'convert.targets=["tflite"]', "bench.runs=10",
                                        "bench.min_seconds=0"]), out=tmp_path / "run")
    assert result.passed
    assert json.loads((tmp_path / "run" / "train.json").read_text())["backend"] == "jax"


def test_unknown_backend_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["train", "--backend", "jaxx", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown backend 'jaxx'. Did you mean 'jax'?" in result.stderr
