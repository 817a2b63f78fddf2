"""How the activation ranges of a static int8 / int16x8 model are chosen from the calibration
samples (``quantize --calibration``), for LiteRT Quantizer's recipes.

- ``minmax``: each tensor's global minimum and maximum over the samples (what TensorFlow's
  converter takes): nothing is clipped, and one outlier widens the step of every value.
- ``percentile``: each tensor's range clipped to the 0.01st and 99.99th percentile of all its
  values over the samples (``PERCENTILE``).
- ``mse``: the range that minimises the expected squared error of quantizing the tensor's
  values (rounding inside the range, clipping outside it), from a histogram of the values.

Weights keep their min-max (per channel) in every method: LiteRT Quantizer's MSE clipping of
the weights too lost 0.79 pt of test accuracy on the MLPerf ResNet-8 (CIFAR-10, 1,017 images)
against activations-only MSE.

The model's input and output tensors keep their full range in every method: the input's is the
data's, and clipping the output would make the top classes tie. ``auto`` (the quantize command)
builds each and keeps the one that is closest to the Keras model on the validation split, if it
beats ``minmax`` by more than one standard error there (``choose``).
"""
from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "mse")
CHOICES = (*METHODS, "auto")
PERCENTILE = 99.99
BINS = 2048
# The share of each side of a range mse tries: 1.0 (min-max) down to 0.05.
SHRINK = np.linspace(1.0, 0.05, 96)


def narrowed(float_model: bytes, samples: np.ndarray, statistics: dict, methods, bits: int) -> dict[str, dict]:
    """Per method: LiteRT Quantizer's global-range statistics of ``float_model`` over
    ``samples`` with every range but the model's inputs' and outputs' narrowed by it (the
    histograms taken once for all the methods)."""
    if all(method == "minmax" for method in methods):
        return {method: statistics for method in methods}
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.quiet import quiet_native
    from pipeline.formats.tflite import SIGNATURE, SIGNATURE_INPUT

    with quiet_native():
        interpreter = Interpreter(model_content=bytes(float_model), experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner(SIGNATURE)
    keep = {detail["name"] for details in (runner.get_input_details(), runner.get_output_details())
            for detail in details.values()}
    ranges = {name: (float(np.min(qsv["min"])), float(np.max(qsv["max"]))) for name, qsv in statistics.items()
              if name not in keep and np.size(qsv["min"]) == 1}
    histograms = tensor_histograms(interpreter, runner, samples, ranges, SIGNATURE_INPUT)
    return {method: clip_statistics(statistics, histograms, method, bits, keep) for method in methods}


def tensor_histograms(interpreter, runner, samples: np.ndarray, ranges: dict[str, tuple[float, float]],
                      input_name: str) -> dict[str, np.ndarray]:
    """Counts of each named tensor's values over every sample, in ``BINS`` equal bins over its
    ``(low, high)`` range; the float model is run once per sample with every tensor kept."""
    index = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
    wanted = {name: index[name] for name in ranges if name in index}
    counts = {name: np.zeros(BINS, dtype=np.int64) for name in wanted}
    for sample in samples:
        runner(**{input_name: sample[None].astype(np.float32)})
        for name, position in wanted.items():
            low, high = ranges[name]
            if high <= low:
                continue
            values = interpreter.get_tensor(position).ravel()
            counts[name] += np.histogram(values, bins=BINS, range=(low, high))[0]
    return counts


def clipped(counts: np.ndarray, low: float, high: float, method: str, bits: int) -> tuple[float, float]:
    """The range ``method`` chooses for a tensor whose values over ``[low, high]`` fell into
    ``counts``; never wider than ``[low, high]``, and holding zero where that does."""
    total = counts.sum()
    if method == "minmax" or total == 0 or high <= low:
        return low, high
    edges = np.linspace(low, high, len(counts) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    if method == "percentile":
        cumulative = np.cumsum(counts) / total
        tail = 1.0 - PERCENTILE / 100.0
        new_low = edges[int(np.searchsorted(cumulative, tail))] if low < 0 else low
        new_high = edges[min(int(np.searchsorted(cumulative, 1.0 - tail)) + 1, len(counts))] if high > 0 else high
        return (float(min(new_low, 0.0)) if low < 0 else low), (float(max(new_high, 0.0)) if high > 0 else high)
    if method != "mse":
        raise ValueError(f"unknown calibration method {method!r}")
    weights = counts / total
    levels = 2 ** bits - 1
    errors = []
    for share in SHRINK:
        lo, hi = low * share if low < 0 else low, high * share if high > 0 else high
        if bits > 8:  # int16 activations are symmetric
            hi = max(abs(lo), abs(hi))
            lo = -hi
        step = (hi - lo) / levels
        outside = np.where(centres < lo, centres - lo, np.where(centres > hi, centres - hi, 0.0))
        inside = (centres >= lo) & (centres <= hi)
        errors.append(float(np.sum(weights * np.where(inside, step * step / 12.0, outside * outside))))
    share = float(SHRINK[int(np.argmin(errors))])
    return (low * share if low < 0 else low), (high * share if high > 0 else high)


def clip_statistics(statistics: dict, histograms: dict[str, np.ndarray], method: str, bits: int,
                    keep: set[str]) -> dict:
    """LiteRT Quantizer's per-tensor statistics (``{"min": array, "max": array}``) with each
    range but those in ``keep`` narrowed by ``method``."""
    result = {}
    for name, qsv in statistics.items():
        if name in keep or name not in histograms or np.size(qsv["min"]) != 1:
            result[name] = qsv
            continue
        low, high = float(np.min(qsv["min"])), float(np.max(qsv["max"]))
        new_low, new_high = clipped(histograms[name], low, high, method, bits)
        result[name] = {**qsv, "min": np.full_like(qsv["min"], new_low), "max": np.full_like(qsv["max"], new_high)}
    return result
