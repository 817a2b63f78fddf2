"""Deployment without TensorFlow (keras-edge-pipeline[deploy], built by scripts/deploy-venv in
.venv-deploy): train under torch, quantize (a float .tflite by litert-torch, then LiteRT
Quantizer), verify and bench, each the `pipeline` command a user runs there. Skipped where that
environment has not been built."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / ".venv-deploy" / "bin"


def _run(*args, cwd):
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # as a new shell there
    return subprocess.run([str(DEPLOY / "pipeline"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=environment)


def test_train_quantize_verify_bench_without_tensorflow(tmp_path):
    if not (DEPLOY / "pipeline").exists():
        pytest.skip("no .venv-deploy (build it with scripts/deploy-venv)")
    probe = subprocess.run([str(DEPLOY / "python"), "-c", "import tensorflow"], capture_output=True)
    assert probe.returncode != 0, "TensorFlow is importable in .venv-deploy: not the environment under test"
    run_dir = tmp_path / "run"
    trained = _run("train", "--backend", "jax", "--out", run_dir, "--epochs", "6", "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    train = json.loads((run_dir / "train.json").read_text())
    assert train["backend"] == "jax" and train["test_accuracy"] > 0.8  # the model learned
    quantized = _run("quantize", "--run", run_dir, "--int8", "--float16", "--dynamic", cwd=tmp_path)
    assert quantized.returncode == 0, quantized.stderr
    for mode in ("int8", "float16", "dynamic"):
        sidecar = json.loads((run_dir / f"model_{mode}.tflite.json").read_text())
        assert sidecar["options"]["engine"] == "litert-quantizer"
    converted = _run("convert", "--run", run_dir, cwd=tmp_path)  # float ONNX by torch.onnx, int8 by ONNX Runtime
    assert converted.returncode == 0, converted.stderr
    assert "model_int8_tflite.onnx not made: tf2onnx" in converted.stderr  # said, not skipped silently
    verified = _run("verify", "--run", run_dir, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads((run_dir / "verify.json").read_text())
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert report["passed"] and rows["model_int8.tflite"]["passed"]  # the default gates hold
    assert rows["model_int8.tflite"]["top1_agreement"] >= 0.98 and rows["model_int8.onnx"]["passed"]
    assert rows["model_float32.onnx"]["max_abs_error"] < 1e-4  # the export computes Keras's function
    # what cannot run without TensorFlow is said: the GPU-delegate analysis of the float16
    assert "no TensorFlow" in rows["model_float16.tflite"]["gpu_delegate"]["error"]
    assert "GPU-delegate compatibility not checked" in verified.stderr
    benched = _run("bench", "--run", run_dir, "--runs", "20", cwd=tmp_path)
    assert benched.returncode == 0, benched.stderr
    assert "model_int8.tflite" in benched.stdout and "p50" in benched.stdout
    forced = subprocess.run([str(DEPLOY / "pipeline"), "quantize", "--run", str(run_dir)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=600, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert forced.returncode == 2 and forced.stderr.startswith("error: $KERAS_BACKEND is tensorflow, which is not")
    converter = _run("quantize", "--run", run_dir, "--int8", "--engine", "converter", cwd=tmp_path)
    assert converter.returncode == 2 and converter.stderr.startswith("error: int8 by TensorFlow's converter")
    assert converter.stderr.count("\n") == 1
