"""The edge runtime on an emulated Raspberry Pi 4 (aarch64 under qemu-user): int8 outputs
bit-identical to x86 for the run's artifacts. Builds (once) a sysroot with scripts/arm64-sysroot.sh."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_run

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_edge_runtime_on_emulated_raspberry_pi(trained_run, tmp_path):
    if not shutil.which("qemu-aarch64-static"):
        pytest.skip("qemu-aarch64-static not installed (CI installs qemu-user-static)")
    from edge_runtime import load
    from edge_runtime.runner import quantize as quantize_input
    from pipeline.config.stages import ConvertOptions, QuantizeOptions
    from pipeline.data.context import RunContext
    from pipeline.optimizing.convert import convert
    from pipeline.optimizing.quantize import quantize

    run_dir = copy_run(trained_run.run_dir, tmp_path / "copy")
    quantize(run_dir, QuantizeOptions(modes=["int8", "int16x8", "dynamic"]))
    convert(run_dir, ConvertOptions())
    # Integer models (LiteRT int8 and int16x8, tf2onnx's int8 graph): bit-identical on ARM64;
    # float and dynamic-range models to float rounding. ONNX Runtime's
    # QDQ model runs other int8 kernels on ARM (measured: 13 of 240 outputs differ, by up to
    # 20 output steps), so it gets a tolerance and an identical top-1 instead.
    policy = {"model_int8.tflite": "exact", "model_int16x8.tflite": "exact",
              "model_dynamic.tflite": 1e-4, "model_float32.tflite": 1e-5,
              "model_int8_tflite.onnx": "exact", "model_float32.onnx": 1e-5, "model_int8.onnx": 0.1}
    names = list(policy)
    x = RunContext(run_dir).dataset.split("test")[0][:24]
    expected = {"inputs": x}
    for name in names:
        shutil.copy(run_dir / name, tmp_path / name)
        shutil.copy(run_dir / f"{name}.json", tmp_path / f"{name}.json")
        runner = load(tmp_path / name)
        expected[name] = np.concatenate([runner.invoke_quantized(quantize_input(s[None], runner.input))
                                         for s in x])
    np.savez(tmp_path / "expected.npz", **expected)
    (tmp_path / "expected.json").write_text(json.dumps(policy))
    # the device's own pytest: none of the host suite's options (addopts, PYTEST_ADDOPTS) apply there
    env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}, "EDGE_DEVICE_ARTIFACTS": str(tmp_path),
           "EDGE_DEVICE_MACHINE": "aarch64", "QEMU_CPU": "cortex-a72"}
    done = subprocess.run([str(PROJECT / "scripts" / "arm64-python"), "-m", "pytest", "-q", "-o", "addopts=",
                           "-p", "no:cacheprovider", "tests/on_device"],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{len(names) + 2} passed" in done.stdout
