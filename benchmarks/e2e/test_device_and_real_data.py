"""Long cases on a device and on real data: a search timed over SSH on a loopback device
(the suite keeps `pipeline bench --device ssh://...`, tests/device/test_remote.py), and
benchmarks/cifar_recover.py on a slice of the real CIFAR-10 images (../shared/data; the suite
keeps the MLPerf ResNet-8 import and its TFLite Micro check, tests/test_shared_data.py)."""
import json
import os

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import shared_data
from tests.test_shared_data import PROJECT


@pytest.mark.slow
def test_search_times_every_trial_on_the_device(sshd, default_remote_dir, tmp_path):
    import getpass

    pytest.importorskip("keras_tuner")
    out = tmp_path / "search"
    args = ["search", "--model", "mlp", "--epochs", "1", "--trials", "1", "--bench-seconds", "0.1",
            "--device", f"ssh://{getpass.getuser()}@127.0.0.1:{sshd['port']}",
            "--ssh-option", f"-i={sshd['key']},StrictHostKeyChecking=no,UserKnownHostsFile={sshd['known_hosts']}",
            "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "search.json").read_text())
    timing = summary["timing"]  # what the device's edge-runtime said about itself
    assert timing["location"].startswith("ssh://") and timing["cpu_count"] == os.cpu_count()
    assert summary["trials"][0]["metrics"]["p50_ms"] > 0
    assert len(summary["baseline"]["p50_ms_rounds"]) == len(summary["best"]["p50_ms_rounds"]) == 3
    assert (default_remote_dir / "venv" / "bin" / "edge-runtime").exists()
    assert not list(default_remote_dir.glob("job.*"))  # every timing job cleaned up after itself


@pytest.mark.slow
def test_the_cifar10_recovery_benchmark_runs_on_real_images(tmp_path, monkeypatch):
    """benchmarks/cifar_recover.py on a slice of the real CIFAR-10 images (400 train, 150
    test), with the recovery's search cut to the classifier head so the suite stays short
    (the benchmark itself searches every layer on all 6,499 images). Whatever the recovery
    decides, it is consistent: a mix it writes passed validation with its margin, a refusal
    is one line and leaves no mix, and every test figure carries its interval."""
    import importlib.util

    import pipeline.optimizing.mixed_precision

    shared = shared_data()
    shared_data("cifar10", "cifar10_train_partial.npz")
    shared_data("mlperf_tiny", "ic", "pretrainedResnet.h5")
    spec = importlib.util.spec_from_file_location("cifar_recover", PROJECT / "benchmarks" / "cifar_recover.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    every_layer = pipeline.optimizing.mixed_precision._raisable_layers
    monkeypatch.setattr(pipeline.optimizing.mixed_precision, "_raisable_layers", lambda model: every_layer(model)[-4:])
    monkeypatch.setattr(pipeline.optimizing.mixed_precision, "PRECISIONS", ("float",))
    result = benchmark.run_case(shared, tmp_path, train=400, test=150, bench_seconds=0)
    recovery, rows = result["recovery"], result["rows"]
    assert result["test_samples"] == 150 and {"model_float32.tflite", "model_int8.tflite"} <= set(rows)
    if recovery["status"] == "recovered":
        assert recovery["validation"]["passed_with_margin"] and "model_int8_mixed.tflite" in rows
    elif recovery["status"] == "refused":
        assert recovery["message"].startswith("int8 recovery: no mix") and "\n" not in recovery["message"]
        assert "model_int8_mixed.tflite" not in rows
    else:
        assert recovery["status"] == "full int8 passes: left alone", recovery
    for row in rows.values():
        low, high = row["accuracy_ci95"]
        assert low <= row["metric_value"] <= high and all(g["verdict"] for g in row["gates"].values())
    printed = benchmark.lines(result)
    assert printed[0].startswith(f"recovery: {recovery['status']}")
    assert any(line.startswith("test (150 images") for line in printed)
