"""Hostile conditions: Files read back are checked by type before use: sidecars, verify records,
pickled npz, a device's answer, search baselines. Each case asserts what a user sees (one
``error:`` line and a documented exit code, or the right result) and what a user cares about
(their files unchanged)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.hostile.helpers import invoke, one_error_line


@pytest.mark.parametrize("field, value, message", [
    ("preprocessing", {"scale": "x"}, "preprocessing.scale must be a positive number"),
    ("preprocessing", {"mean": "abc", "input_shape": [28, 28, 1]}, "preprocessing.mean must be a number"),
    ("preprocessing", {"mean": [0.1, 0.2], "input_shape": [28, 28, 1]},
     "preprocessing.mean has 2 values for inputs of 1 channels"),
    ("inputs", "nope", "inputs must be a list of objects"),
    ("inputs", [{"name": "x", "shape": "1x28", "dtype": "int8"}], "inputs[0].shape must be a list of integers"),
    ("class_names", [1, 2], "class_names must be a list of strings"),
    ("sha256", 12, "sha256 must be 64 hexadecimal digits"),
])
def test_sidecar_fields_of_the_wrong_type(int8_copy, field, value, message, capsys):
    from edge_runtime.cli import main

    sidecar_path = int8_copy / "model_int8.tflite.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar[field] = {**sidecar[field], **value} if isinstance(value, dict) else value
    sidecar_path.write_text(json.dumps(sidecar))
    assert main(["info", str(int8_copy / "model_int8.tflite")]) == 4  # the device's command line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    line = one_error_line(invoke("verify", "--run", int8_copy), 4)
    assert message in line


def test_a_planted_accuracy_outside_zero_and_one_is_refused(int8_copy):
    assert invoke("verify", "--run", int8_copy, "--quiet").exit_code == 0
    train = json.loads((int8_copy / "train.json").read_text())
    train["test_accuracy"] = 1.5
    (int8_copy / "train.json").write_text(json.dumps(train))
    line = one_error_line(invoke("report", "--run", int8_copy), 7)
    assert "test_accuracy must be a number in [0, 1], got 1.5" in line


def test_edge_runtime_eval_refuses_a_pickled_npz(int8_copy, tmp_path):
    data = tmp_path / "evil.npz"
    np.savez(data, x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "eval", str(int8_copy / "model_int8.tflite"),
                           str(data)], capture_output=True, text=True)
    assert done.returncode == 3 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("answer, why", [
    ("", "no output"), ("<html>", "not JSON"), ("[1, 2]", "no device description"),
    ('{"device": {}, "results": []}', "no results"),
    ('{"device": {}, "results": [{"p50_ms": "fast"}]}', "p50_ms 'fast' is not a positive latency"),
    ('{"device": {}, "results": [{"p50_ms": -1}]}', "is not a positive latency"),
    ('{"device": {}, "results": [{"p50_ms": 1, "threads": "all"}]}', "threads is not an integer"),
])
def test_a_device_that_answers_garbage(answer, why):
    from pipeline.core.errors import PipelineError
    from pipeline.device.remote import _device_answer

    with pytest.raises(PipelineError, match="is not a bench report") as raised:
        _device_answer(answer, "ssh://pi", "model_int8.tflite")
    assert why in str(raised.value)


def test_a_damaged_baseline_record_is_retrained_not_a_traceback(tmp_path):
    from pipeline.search.winner import _recorded

    (tmp_path / "train.json").write_text('{"test_accuracy": "high"}')
    assert _recorded(tmp_path) is None
    (tmp_path / "train.json").write_text("[1]")
    assert _recorded(tmp_path) is None
    (tmp_path / "train.json").write_text('{"test_accuracy": 0.5}')
    assert _recorded(tmp_path) == {"test_accuracy": 0.5}
    (tmp_path / "train.json").write_text('{"test_metric": {"metric": "auc", "value": 0.9, "ci95": [0.95, 0.8]}}')
    assert _recorded(tmp_path) is None  # a reversed interval: trained again
    (tmp_path / "train.json").write_text('{"test_metric": {"metric": "auc", "value": 0.9, "ci95": [0.8, 0.95]}}')
    assert _recorded(tmp_path)["test_metric"]["value"] == 0.9
