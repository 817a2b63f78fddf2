"""Verification gates (their settings are ``config.gates``): the metrics they
read (task metric, SQNR, intervals of accuracy, agreement and drop), and each gate's
pass/fail and its verdict from the value's 95% interval."""
from __future__ import annotations

from typing import Any

import numpy as np


def task_metric(predictions, y_test, x_test, task: str) -> float:
    if task == "classifier":
        return float(np.mean(predictions.argmax(-1) == y_test))
    return float(np.mean((predictions - x_test) ** 2))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def classifier_intervals(reference: np.ndarray, output: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """95% intervals of an artifact's accuracy, its agreement with Keras (Wilson) and its
    accuracy drop (paired: the same test samples through both)."""
    from pipeline.core.stats import paired_drop, wilson

    n = len(y_test)
    reference_right, output_right = reference.argmax(-1) == y_test, output.argmax(-1) == y_test
    agree = int(np.sum(output.argmax(-1) == reference.argmax(-1)))
    drop = paired_drop(reference_right, output_right)
    return {"accuracy_ci95": list(wilson(int(output_right.sum()), n)),
            "keras_accuracy_ci95": list(wilson(int(reference_right.sum()), n)),
            "top1_agreement_ci95": list(wilson(agree, n)), "metric_drop_ci95": drop["ci95"],
            "metric_drop_paired": {k: drop[k] for k in ("lost", "gained", "n", "method")}}


def apply_gates(row: dict, rules: dict[str, tuple[str, float]]) -> dict[str, dict]:
    """Each gate: its value, pass/fail by the point estimate (the exit code), and a verdict
    from the value's 95% interval: ``inconclusive`` when it straddles the threshold, with the
    test samples that would settle it. Exact figures (a worst-case error, an agreement that
    must be 100%) have no interval: their verdict is the point's."""
    from pipeline.core.stats import drop_samples_needed, proportion_samples_needed, verdict

    results = {}
    for metric, (op, threshold) in rules.items():
        value = row[metric]
        if value is None:  # e.g. top-1 agreement of an autoencoder
            results[metric] = {"op": op, "threshold": threshold, "value": None, "passed": True, "verdict": "pass"}
            continue
        passed = value <= threshold + 1e-12 if op == "<=" else value >= threshold - 1e-12
        ci95 = row.get(f"{metric}_ci95")
        exact = ci95 is None or (metric.endswith("top1_agreement") and threshold >= 1.0)
        gate = {"op": op, "threshold": threshold, "value": value, "passed": bool(passed),
                "verdict": verdict(op, threshold, value, ci95, exact=exact)}
        if not exact:
            gate["ci95"] = ci95
        if gate["verdict"] == "inconclusive":
            needed = (drop_samples_needed({**row["metric_drop_paired"], "drop": value}, threshold)
                      if metric == "metric_drop" and "metric_drop_paired" in row
                      else proportion_samples_needed(value, threshold))
            gate["samples_to_settle"] = needed
        results[metric] = gate
    return results


def inconclusive_gates(report: dict) -> list[str]:
    """``artifact: gate (value, 95% interval, threshold; ~N test samples would settle it)``
    for every gate whose interval straddles its threshold."""
    found = []
    for row in report["artifacts"]:
        for name, gate in row["gates"].items():
            if gate.get("verdict") == "inconclusive":
                low, high = gate["ci95"]
                settle = gate.get("samples_to_settle")
                found.append(f"{row['artifact']} {name} {_shown(name, gate['value'])} (95% interval "
                             f"{_shown(name, low)} to {_shown(name, high)}, "
                             f"gate {gate['op']} {_shown(name, gate['threshold'])}"
                             + (f"; about {settle:,} test samples would settle it" if settle else "") + ")")
    return found


def _shown(metric: str, value: float) -> str:
    if "agreement" in metric or metric == "metric_drop":
        return f"{value * 100:.2f}{' pt' if metric == 'metric_drop' else '%'}"
    return f"{value:g}"
