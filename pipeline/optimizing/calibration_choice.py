"""``quantize --calibration auto``: build a static int8 / int16x8 model with each calibration
method (``pipeline.formats.calibration``) and keep the one closest to the Keras model on the
validation split, never the test split that ``verify`` reports.

Closeness per validation sample: for a classifier, whether its top-1 class is the Keras
model's; for an autoencoder, minus how far its anomaly score moved from the Keras model's; for a
regression, minus its mean absolute difference from the Keras model's output. A method other
than ``minmax`` is kept only if its mean closeness beats ``minmax``'s by more than one standard
error of the paired difference (recovery's margin rule): a few validation samples never move
the choice away from the plain ranges.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pipeline.formats.calibration import METHODS

FIGURE = {"classifier": "top1_agreement", "reconstruction": "anomaly_score_shift",
          "regression": "mean_abs_difference"}


def closeness(task: str, outputs: np.ndarray, reference: np.ndarray, x_val: np.ndarray) -> np.ndarray:
    """Per validation sample: higher is closer to the Keras model."""
    if task == "classifier":
        return (outputs.reshape(len(outputs), -1).argmax(-1)
                == reference.reshape(len(reference), -1).argmax(-1)).astype(np.float64)
    if task == "reconstruction":
        from edge_runtime.tasks import anomaly_scores

        return -np.abs(anomaly_scores(outputs, x_val) - anomaly_scores(reference, x_val))
    return -np.abs(outputs - reference).reshape(len(outputs), -1).mean(-1)


def choose(model, float_model: bytes, mode: str, samples: np.ndarray, x_val: np.ndarray, task: str,
           methods: tuple[str, ...] = METHODS) -> tuple[bytes, dict]:
    """The chosen model and its record: the method, each method's figure on the validation
    split, and the margin the choice had to beat."""
    from edge_runtime import load
    from pipeline.core.errors import DataError
    from pipeline.formats.litert_quantizer import quantize_methods

    if len(x_val) < 2:
        raise DataError("--calibration auto chooses on the validation split, and this run has "
                        f"{len(x_val)} validation samples: choose a method (minmax, percentile, mse)")
    reference = model.predict(x_val, batch_size=256, verbose=0)
    built, close = quantize_methods(float_model, mode, samples, methods), {}
    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        for method in methods:
            path = Path(tmp) / f"{method}.tflite"
            path.write_bytes(built[method])
            outputs = load(path).predict(x_val).reshape(reference.shape)
            close[method] = closeness(task, outputs, reference, x_val)
    chosen, alternatives = pick(close, task)
    record = {"method": chosen, "chosen_by": "validation", "validation_samples": int(len(x_val)),
              "figure": FIGURE[task], "alternatives": alternatives,
              "rule": "a method other than minmax only if it beats minmax by one standard error "
                      "of the paired difference on the validation split"}
    return built[chosen], record


def pick(close: dict[str, np.ndarray], task: str = "classifier") -> tuple[str, dict]:
    """The method whose per-sample closeness beats ``minmax``'s most, by more than one standard
    error of the paired difference; ``minmax`` when none does. Also each method's figure."""
    base = close["minmax"]
    alternatives, chosen, best_gain = {}, "minmax", 0.0
    for method, values in close.items():
        difference = values - base
        margin = float(np.std(difference, ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0
        gain = float(difference.mean())
        figure = float(values.mean())
        alternatives[method] = {"value": figure if task == "classifier" else -figure,
                                "gain_over_minmax": gain, "margin": margin}
        if method != "minmax" and gain > margin + 1e-12 and gain > best_gain:
            chosen, best_gain = method, gain
    return chosen, alternatives
