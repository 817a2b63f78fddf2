"""Uncertainty on every accuracy figure: intervals checked against hand-computed ones, and a
gate inside the noise of its test split called inconclusive, with the samples that would
settle it."""
import math

import numpy as np
import pytest

from pipeline.core.stats import drop_samples_needed, paired_drop, proportion_samples_needed, verdict, wilson


def test_wilson_interval_matches_the_hand_computed_one():
    # 350 of 360 digits right (the seed CNN): p = 0.972222, z = 1.959964, n = 360
    # centre = (p + z²/2n) / (1 + z²/n) = 0.977558 / 1.010671 = 0.967237
    # half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n) = 1.959964·0.0090790 / 1.010671 = 0.017607
    low, high = wilson(350, 360)
    assert low == pytest.approx(0.949630, abs=2e-6) and high == pytest.approx(0.984843, abs=2e-6)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0  # clipped to [0, 1]
    assert wilson(10, 10)[0] == pytest.approx(10 / (10 + 1.959964 ** 2), abs=1e-6)  # n/(n+z²) at p = 1


def test_paired_drop_is_the_discordant_difference_and_brackets_it():
    rng = np.random.default_rng(3)
    reference = rng.random(1000) < 0.97
    test = reference.copy()
    lost = np.flatnonzero(reference)[:15]  # 15 samples the test model gets wrong
    gained = np.flatnonzero(~reference)[:5]  # 5 it gets right
    test[lost], test[gained] = False, True
    drop = paired_drop(reference, test)
    assert (drop["lost"], drop["gained"], drop["n"]) == (15, 5, 1000)
    assert drop["drop"] == pytest.approx(0.010)
    low, high = drop["ci95"]
    assert low < 0.010 < high
    # the paired standard error: sqrt((b + c)/n - d²)/sqrt(n) = sqrt(0.02 - 0.0001)/sqrt(1000) = 0.004461
    assert (high - low) / (2 * 1.96) == pytest.approx(0.004461, rel=0.12)
    assert paired_drop(reference, test) == drop  # seeded: the same interval every time
    assert paired_drop(reference, reference)["ci95"] == [0.0, 0.0]


def test_verdicts_and_the_samples_that_would_settle_one():
    assert verdict(">=", 0.98, 0.995, [0.985, 0.999]) == "pass"
    assert verdict(">=", 0.98, 0.95, [0.93, 0.97]) == "fail"
    assert verdict(">=", 0.98, 0.985, [0.967, 0.993]) == "inconclusive"
    assert verdict("<=", 0.01, 0.005, [-0.002, 0.012]) == "inconclusive"
    assert verdict(">=", 1.0, 1.0, [0.99, 1.0], exact=True) == "pass"
    # 100% agreement against a 99% gate: the Wilson lower bound at p = 1 is n/(n + z²), which
    # reaches 0.99 at n = 0.99·z²/0.01 = 380.3: 381 samples (digits' 360 cannot settle it)
    assert proportion_samples_needed(1.0, 0.99) == 381
    needed = proportion_samples_needed(0.985, 0.98)  # the smallest n whose interval clears 98%
    assert wilson(round(0.985 * needed), needed)[0] >= 0.98 > wilson(round(0.985 * (needed - 1)), needed - 1)[0]
    assert proportion_samples_needed(0.98, 0.98) is None
    paired = {"lost": 15, "gained": 5, "n": 1000, "drop": 0.005}
    assert drop_samples_needed(paired, 0.01) == math.ceil(1.959964 ** 2 * (0.02 - 0.0001) / 0.005 ** 2)


def test_an_inconclusive_gate_reads_as_such():
    from pipeline.checking.gates import apply_gates, inconclusive_gates

    row = {"artifact": "model_int8.tflite", "top1_agreement": 0.985, "top1_agreement_ci95": list(wilson(394, 400)),
           "metric_drop": 0.0, "metric_drop_ci95": [-0.005, 0.005]}
    gates = apply_gates(row, {"top1_agreement": (">=", 0.98), "metric_drop": ("<=", 0.01)})
    assert gates["top1_agreement"]["passed"] and gates["top1_agreement"]["verdict"] == "inconclusive"
    assert gates["metric_drop"]["verdict"] == "pass"
    assert inconclusive_gates({"artifacts": [{**row, "gates": gates}]}) == [
        "model_int8.tflite top1_agreement 98.50% (95% interval 96.77% to 99.31%, gate >= 98.00%; "
        f"about {proportion_samples_needed(0.985, 0.98):,} test samples would settle it)"]


def test_verify_records_intervals_and_verdicts_for_every_gate(trained_run, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    assert CliRunner().invoke(app, ["quantize", "--int8", "--no-recover", "--run", str(run_dir)]).exit_code == 0
    result = CliRunner().invoke(app, ["verify", "--run", str(run_dir)])
    report = json.loads((run_dir / "verify.json").read_text())
    for row in report["artifacts"]:
        for key in ("accuracy_ci95", "top1_agreement_ci95", "metric_drop_ci95"):
            low, high = row[key]
            assert low <= high
        assert row["accuracy_ci95"][0] <= row["metric_value"] <= row["accuracy_ci95"][1]
        assert all(g["verdict"] in ("pass", "fail", "inconclusive") for g in row["gates"].values())
        assert all("ci95" in g for name, g in row["gates"].items() if name == "metric_drop")
    inconclusive = report["inconclusive"]
    assert result.exit_code == (0 if report["passed"] else 6)
    assert ("warning: " in result.stderr) == bool(inconclusive)
    strict = CliRunner().invoke(app, ["verify", "--run", str(run_dir), "--strict"])
    assert strict.exit_code == (6 if inconclusive or not report["passed"] else 0)


def test_an_unpaired_difference_and_what_is_within_noise_match_a_hand_computation():
    """0.95 and 0.94 on 144 samples each: ±1.96·√((0.95·0.05 + 0.94·0.06)/144) = ±0.0526,
    so the search re-scores the second; 0.95 and 0.85 differ by more than that."""
    from pipeline.core.stats import difference_ci95, within_noise

    low, high = difference_ci95(0.95, 144, 0.94, 144)
    assert abs(low - (0.01 - 0.052647)) < 1e-5 and abs(high - (0.01 + 0.052647)) < 1e-5
    assert within_noise(0.95, 0.94, 144) and not within_noise(0.95, 0.85, 144)
    assert within_noise(1.0, 1.0, 144)  # two perfect scores: nothing tells them apart
