"""`quantize --calibration`: how activation ranges are chosen (min-max, percentile, MSE), and
`auto`, which keeps another method than min-max only when it is closer to Keras on the
validation split by more than one standard error."""
import json

import numpy as np
import pytest

from tests.conftest import copy_run
from tests.hostile.helpers import invoke, one_error_line


def _histogram(values, low, high):
    from pipeline.formats.calibration import BINS

    return np.histogram(values, bins=BINS, range=(low, high))[0]


def test_percentile_and_mse_clip_a_rare_outlier_and_leave_a_uniform_range():
    from pipeline.formats.calibration import SHRINK, clipped

    rng = np.random.default_rng(0)
    bulk = np.abs(rng.normal(0.0, 1.0, 2_000_000))     # a ReLU's output: non-negative, a long tail
    values = np.concatenate([bulk, [40.0]])            # one sample's outlier sets the max
    counts = _histogram(values, 0.0, 40.0)
    low, high = clipped(counts, 0.0, 40.0, "percentile", 8)
    expected = np.percentile(values, 99.99)
    assert low == 0.0 and abs(high - expected) <= 40.0 / 2048 + 1e-9  # within one bin
    # mse's range is the one whose 8-bit fake quantization of the actual values errs least
    mse_low, mse_high = clipped(counts, 0.0, 40.0, "mse", 8)
    def error(high):
        step = high / 255
        return np.mean((np.round(np.clip(values, 0.0, high) / step) * step - values) ** 2)

    best = min(error(40.0 * share) for share in SHRINK)
    assert mse_low == 0.0 and mse_high < 40.0 and error(mse_high) <= 1.05 * best, (mse_high, error(mse_high), best)
    assert clipped(counts, 0.0, 40.0, "minmax", 8) == (0.0, 40.0)
    uniform = rng.uniform(-2.0, 3.0, 200_000)          # nothing to clip: the range stays
    counts = _histogram(uniform, -2.0, 3.0)
    for method in ("percentile", "mse"):
        low, high = clipped(counts, -2.0, 3.0, method, 8)
        assert -2.0 <= low <= -1.95 and 2.95 <= high <= 3.0, (method, low, high)
    positive = _histogram(np.full(10, 2.0), 1.0, 3.0)
    assert clipped(positive, 1.0, 3.0, "percentile", 8)[0] == 1.0  # no negatives: the low end stays


def test_auto_keeps_minmax_unless_another_method_is_clearly_closer():
    from pipeline.optimizing.calibration_choice import pick

    n = 1000
    base = np.ones(n)
    base[:40] = 0                                       # min-max disagrees with Keras on 4%
    one_better = base.copy()
    one_better[0] = 1                                   # one sample: noise, not a reason
    assert pick({"minmax": base, "percentile": one_better})[0] == "minmax"
    much_better = base.copy()
    much_better[:30] = 1                                # 30 more agree, none fewer
    worse = base.copy()
    worse[50:70] = 0
    chosen, alternatives = pick({"minmax": base, "percentile": much_better, "mse": worse})
    assert chosen == "percentile"
    assert alternatives["percentile"]["value"] == pytest.approx(0.99)
    assert alternatives["mse"]["gain_over_minmax"] == pytest.approx(-0.02)
    assert pick({"minmax": base, "percentile": base.copy()})[0] == "minmax"  # a tie keeps min-max


def test_calibration_auto_records_its_choice_and_the_artifact_passes_verify(trained_run, tmp_path):
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.formats.calibration import METHODS

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    for stale in run_dir.glob("model_*"):
        stale.unlink()
    result = invoke("quantize", "--run", run_dir, "--int8", "--calibration", "auto", "--no-recover")
    assert result.exit_code == 0, result.output
    assert "calibration auto chose" in result.output
    sidecar = json.loads((run_dir / "model_int8.tflite.json").read_text())
    chosen = sidecar["options"]["calibration"]
    assert sidecar["options"]["engine"] == "litert-quantizer"
    assert chosen["method"] in METHODS and set(chosen["alternatives"]) == set(METHODS)
    assert chosen["validation_samples"] > 0 and chosen["figure"] == "top1_agreement"
    assert all(0.0 <= a["value"] <= 1.0 for a in chosen["alternatives"].values())
    assert verify(run_dir, VerifyOptions())["passed"]   # the default gates hold for the chosen one


@pytest.mark.parametrize("args, expected", [
    (["--calibration", "percentile", "--float-io"], "--calibration percentile is LiteRT Quantizer's"),
    (["--calibration", "mse", "--engine", "converter"], "--engine converter asks for TensorFlow's converter"),
    (["--calibration", "histogram"], "unknown --calibration 'histogram'"),
])
def test_calibration_that_cannot_be_done_is_one_line(trained_run, tmp_path, args, expected):
    run_dir = copy_run(trained_run.run_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.glob("model_*")}
    line = one_error_line(invoke("quantize", "--run", run_dir, "--int8", *args), 2)
    assert expected in line
    assert {p.name: p.read_bytes() for p in run_dir.glob("model_*")} == before
