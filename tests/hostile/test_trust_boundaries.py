"""Files a user did not create on this command line are untrusted: model files, run
directories, sidecars, configs, device strings. Each test is one finding of the hostile
review (issue "Trust boundaries"), asserting what the user cares about: no code ran, the
user's file is unchanged, a wrong answer is an error rather than a silent number."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.fsutil import read_json

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def quantized_copy(trained_run, tmp_path):
    """A private copy of the seed run with its int8 TFLite (and sidecar)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock"))
    result = invoke("quantize", "--int8", "--run", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def _lambda_model(path, marker):
    """A model whose Lambda layer writes ``marker`` whenever it runs (its bytecode is saved)."""
    import keras

    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('code ran'), x)[1]")
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(touch),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model ran it once, here, on purpose


def test_a_run_directory_cannot_grant_itself_trust(quantized_copy, tmp_path):
    marker = tmp_path / "pwned"
    _lambda_model(quantized_copy / "model.keras", marker)
    train_json = read_json(quantized_copy / "train.json")
    train_json["config"]["unsafe"] = True  # the run "says" it is trusted
    (quantized_copy / "train.json").write_text(json.dumps(train_json))
    result = invoke("quantize", "--int8", "--run", quantized_copy)
    assert "pass --unsafe" in one_error_line(result, 4)
    assert not marker.exists()


def test_out_refuses_a_directory_that_is_not_a_run(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.keras").write_bytes(b"the user's own model")
    result = invoke("train", "--model", "mlp", "--epochs", "1", "--out", mine, "--quiet")
    assert "is not empty and is not a pipeline run" in one_error_line(result, 7)
    assert (mine / "model.keras").read_bytes() == b"the user's own model"
    assert sorted(p.name for p in mine.iterdir()) == ["model.keras"]


def test_retraining_moves_the_old_outputs_aside(quantized_copy):
    old_int8 = (quantized_copy / "model_int8.tflite").read_bytes()
    result = invoke("train", "--model", "mlp", "--epochs", "1", "--quiet", "--out", quantized_copy)
    assert result.exit_code == 0, result.output
    assert not (quantized_copy / "model_int8.tflite").exists()  # nothing pairs the new model with it
    aside = list((quantized_copy / "superseded").glob("*/model_int8.tflite"))
    assert len(aside) == 1 and aside[0].read_bytes() == old_int8  # moved, not lost
    manifest = read_json(quantized_copy / "manifest.json")
    assert set(manifest["artifacts"]) == {"model.keras", "train.json"}
    # an old artifact copied back is refused as stale, not verified against the new model
    shutil.copy2(aside[0], quantized_copy / "model_int8.tflite")
    shutil.copy2(aside[0].with_name("model_int8.tflite.json"), quantized_copy / "model_int8.tflite.json")
    assert "stale artifact(s): model_int8.tflite" in one_error_line(invoke("verify", "--run", quantized_copy), 7)


def test_verify_checks_the_sidecar_the_device_will_read(quantized_copy):
    sidecar_path = quantized_copy / "model_int8.tflite.json"
    sidecar = read_json(sidecar_path)
    sidecar["preprocessing"]["scale"] = 1.0  # a device would feed 0..255 instead of 0..1
    sidecar_path.write_text(json.dumps(sidecar))
    result = invoke("verify", "--run", quantized_copy)
    assert result.exit_code == 6 and "model_int8.tflite (" in result.stderr and "sidecar" in result.stderr
    row = _verify_row(quantized_copy, "model_int8.tflite")
    assert row["gates"]["sidecar"]["passed"] is False and "preprocessing.scale" in row["gates"]["sidecar"]["value"]
    sidecar_path.unlink()
    result = invoke("verify", "--run", quantized_copy)
    assert result.exit_code == 6
    assert "missing" in _verify_row(quantized_copy, "model_int8.tflite")["gates"]["sidecar"]["value"]


def _verify_row(run_dir, artifact):
    rows = read_json(run_dir / "verify.json")["artifacts"]
    return next(row for row in rows if row["artifact"] == artifact)


def test_a_sidecar_that_is_not_an_object_is_one_line(quantized_copy):
    (quantized_copy / "model_int8.tflite.json").write_text("[1, 2, 3]")
    assert "is not a JSON object" in one_error_line(invoke("verify", "--run", quantized_copy), 4)


def test_a_tampered_artifact_is_one_line_in_every_command(quantized_copy):
    path = quantized_copy / "model_int8.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for command in (["verify"], ["bench", "--runs", "5", "--min-seconds", "0"]):
        line = one_error_line(invoke(*command, "--run", quantized_copy), 4)
        assert "does not match its sidecar" in line


def test_edge_runtime_refuses_inputs_that_would_give_silent_wrong_answers(quantized_copy, digits, tmp_path):
    from edge_runtime import load
    from edge_runtime.errors import InputError

    runner_ = load(quantized_copy / "model_int8.tflite")
    raw = digits.x_test[:8]  # uint8 pixels
    x, _ = digits.split("test")
    np.testing.assert_array_equal(runner_.predict(raw, raw=True), runner_.predict(x[:8]))
    with pytest.raises(InputError, match="pass --raw"):
        runner_.predict(raw)  # uint8 fed as model input
    with pytest.raises(InputError, match="pass raw samples with --raw"):
        runner_.predict(raw.astype(np.float32))  # pixel values 0..255 fed as model input
    with pytest.raises(InputError, match="already preprocessed"):
        runner_.predict(x[:8], raw=True)  # floats in [0, 1] declared raw
    bare = tmp_path / "bare.tflite"
    shutil.copy2(quantized_copy / "model_int8.tflite", bare)
    with pytest.raises(InputError, match="has none"):
        load(bare).predict(raw, raw=True)  # --raw without a preprocessing spec


def test_edge_runtime_eval_runs_onnx(trained_run, digits, tmp_path):
    from edge_runtime.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock"))
    assert invoke("convert", "--to", "onnx", "--no-int8-onnx", "--run", run_dir).exit_code == 0
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    assert main(["eval", str(run_dir / "model_float32.onnx"), str(tmp_path / "test.npz"), "--raw",
                 "--json"]) == 0


def test_calibration_floats_are_not_scaled_twice(quantized_copy, digits, tmp_path):
    x, _ = digits.split("train")
    np.save(tmp_path / "scaled.npy", x[:50])  # already in [0, 1]: not the raw uint8 the data has
    result = invoke("quantize", "--int8", "--calibration-data", tmp_path / "scaled.npy", "--run", quantized_copy)
    assert "look already preprocessed" in one_error_line(result, 3)
    np.save(tmp_path / "raw.npy", digits.x_train[:200])
    for command in (["quantize", "--int8"], ["convert", "--to", "onnx"]):
        result = invoke(*command, "--calibration-data", tmp_path / "raw.npy", "--calibration-samples",
                        "100", "--run", quantized_copy)
        assert result.exit_code == 0, result.output
    tflite = read_json(quantized_copy / "model_int8.tflite.json")["calibration"]
    onnx = read_json(quantized_copy / "model_int8.onnx.json")["calibration"]
    assert tflite["file"] == onnx["file"] == str(tmp_path / "raw.npy")
    assert tflite["indices"] == onnx["indices"] and tflite["indices"] != list(range(100))  # seeded draw


def test_config_mistakes_surface_before_training(tmp_path):
    for setting, message in (("bench.threads=[0]", "bench.threads[0]: must lie in [1, 1024], got 0"),
                             ("verify.gates={\"quantised\": {\"metric_drop\": 0.1}}", "unknown gate kind"),
                             ("bench.devices=[\"ssh://-oProxyCommand=x\"]", "is not a host name"),
                             ("train.learning_rate=NaN", "train.learning_rate")):
        result = invoke("run", "--set", setting, "--out", tmp_path / "run")
        assert message in one_error_line(result, 2)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_pipeline_run_stops_before_optimizing_a_collapsed_model(tmp_path):
    result = invoke("run", "--set", "train.model=mlp", "--set", "train.epochs=2",
                    "--set", "train.learning_rate=5", "--out", tmp_path / "run")
    assert result.exit_code == 10
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]  # after progress
    assert "model collapsed" in errors[0] and "train.allow_collapse=true" in errors[0]
    assert "Traceback" not in result.stderr
    assert (tmp_path / "run" / "model.keras").exists()
    assert not list((tmp_path / "run").glob("*.tflite"))


def test_pareto_front_prefers_lower_reconstruction_error():
    from pipeline.running.report import pareto

    rows = [{"score": -0.01, "p50_ms": 1.0, "size_kb": 10.0},  # low error: the better one
            {"score": -0.50, "p50_ms": 1.0, "size_kb": 10.0}]
    pareto(rows)
    assert [row["pareto"] for row in rows] == [True, False]


def test_device_install_pipeline_script_names_the_extra():
    code = ("import sys; sys.modules['typer'] = None; import importlib.util as u; "
            "real = u.find_spec; u.find_spec = lambda n, *a: None if n == 'typer' else real(n, *a); "
            "from pipeline.launcher import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: the pipeline command runs on a workstation and needs typer: pip install "
        "'keras-edge-pipeline[train]' (or [deploy], without TensorFlow; this install is the device "
        "runtime: use edge-runtime here)"]


def test_zoo_name_wins_over_a_same_named_directory(tmp_path, monkeypatch):
    from pipeline.core.modelio import is_model_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet8").mkdir()
    assert not is_model_path("resnet8") and is_model_path("./resnet8")
