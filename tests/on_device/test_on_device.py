"""Edge-runtime checks on the device itself: same outputs as the x86 host, bit for bit for
integer models. Needs only numpy, LiteRT and ONNX Runtime (no TensorFlow here)."""
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import ArtifactError, load
from edge_runtime.runner import quantize

ARTIFACTS = Path(os.environ.get("EDGE_DEVICE_ARTIFACTS", "."))
EXPECTED = np.load(ARTIFACTS / "expected.npz") if (ARTIFACTS / "expected.npz").exists() else None
# artifact name -> "exact", or the max abs difference allowed (with identical top-1)
POLICY = json.loads((ARTIFACTS / "expected.json").read_text()) if EXPECTED is not None else {}
NAMES = list(POLICY)


def test_runs_on_the_expected_machine():
    assert platform.machine() == os.environ.get("EDGE_DEVICE_MACHINE", platform.machine())
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_the_host(name):
    runner = load(ARTIFACTS / name)
    x = EXPECTED["inputs"]
    outputs = np.concatenate([runner.invoke_quantized(quantize(sample[None], runner.input)) for sample in x])
    expected = EXPECTED[name]
    if POLICY[name] == "exact":
        np.testing.assert_array_equal(outputs, expected)
    else:
        np.testing.assert_allclose(outputs, expected, atol=POLICY[name])
        assert np.array_equal(outputs.argmax(1), expected.argmax(1))


def test_corrupted_artifact_is_refused(tmp_path):
    name = next(n for n in NAMES if n.endswith(".tflite"))
    shutil.copy(ARTIFACTS / f"{name}.json", tmp_path / f"{name}.json")
    data = bytearray((ARTIFACTS / name).read_bytes())
    data[len(data) // 3] ^= 0x40
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        load(tmp_path / name)
