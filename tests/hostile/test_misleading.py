"""Hostile conditions: Silently wrong or misleading: one-class data, repeated --space options, seed
zero, raw calibration floats, SIGTERM. Each case asserts what a user sees (one ``error:`` line
and a documented exit code, or the right result) and what a user cares about (their files
unchanged)."""
import json
import signal
import subprocess
import time

import numpy as np

from tests.hostile.helpers import PIPELINE, PROJECT, invoke, one_error_line


def test_a_one_class_data_set_and_too_few_class_names(tmp_path):
    one = tmp_path / "one.npz"
    np.savez(one, x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.zeros(20, int),
             x_test=np.zeros((5, 8, 8), np.uint8), y_test=np.zeros(5, int))
    line = one_error_line(invoke("train", "--dataset", f"npz:{one}", "--out", tmp_path / "r1"), 3)
    assert "has one class ('0'): a classifier needs at least two" in line
    few = tmp_path / "few.npz"
    np.savez(few, x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.arange(20) % 3,
             x_test=np.zeros((6, 8, 8), np.uint8), y_test=np.arange(6) % 3, class_names=np.array(["cat", "dog"]))
    line = one_error_line(invoke("train", "--dataset", f"npz:{few}", "--out", tmp_path / "r2"), 3)
    assert "labels up to 2 but only 2 class names" in line


def test_repeated_space_options_merge():
    from pipeline.cli.searching import parse_space

    assert parse_space(["learning_rate=0.001", "learning_rate=0.003,0.001", "hidden=32"]) == {
        "learning_rate": [0.001, 0.003], "hidden": [32]}


def test_seed_zero_reaches_kerastuner(digits, tmp_path):
    from pipeline.search import SearchOptions, Timer
    from pipeline.search.trials import _tuner

    options = SearchOptions(model="mlp", seed=0)
    draws = []
    for attempt in range(2):
        out = tmp_path / f"s{attempt}"
        out.mkdir()
        tuner, _ = _tuner(options, digits, out, Timer(options, digits.x_val[0], out))
        assert tuner.oracle.seed == 0
        draws.append([tuner.oracle._random_values() for _ in range(5)])
    assert draws[0] == draws[1]


def test_calibration_floats_are_not_told_to_drop_raw(int8_copy, digits, tmp_path):
    samples = tmp_path / "scaled.npy"
    np.save(samples, digits.x_train[:50].astype(np.float32) / 255.0)
    line = one_error_line(invoke("quantize", "--int8", "--run", int8_copy, "--calibration-data", samples), 3)
    assert "--raw" not in line and "a calibration file holds raw samples like the data set's (uint8)" in line


def test_sigterm_is_one_line_exit_143_and_leaves_whole_files(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([*PIPELINE, "train", "--epochs", "200", "--out", str(out)], cwd=PROJECT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / ".lock").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    for path in out.rglob("*.json"):
        if not path.name.startswith("."):  # a hidden temporary is never read
            json.loads(path.read_text())
