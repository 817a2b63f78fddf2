"""``quantize --int8 --recover``: when the full-int8 model fails its gates, find the fewest
layers to raise in precision — int16 activations first, float as the last resort — so that
the model passes them, and write it as ``model_int8_mixed.tflite``.

Every try is scored on the **validation** split against the Keras model, never on the test
split that ``verify`` later reports. The search (after NNCF's accuracy-aware quantization,
which reverts layers one by one): measure how much raising each layer (or a layer with the
next) alone helps, then add them greedily — at each step the one of the most promising that
helps most — until the gates pass (by a margin) or a quarter of the layers are raised; once
with int16 activations, once with float, and the mix with fewer raised layers wins. Per-layer precision comes from
``ai-edge-quantizer`` recipes on a float TFLite model with a signature.
"""
from __future__ import annotations

import contextlib
import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConversionError

# Ops whose precision a recipe can raise (those with weights or requantized activations).
RAISABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "AVERAGE_POOL_2D",
            "MAX_POOL_2D", "MEAN", "SOFTMAX", "CONCATENATION", "BATCH_MATMUL")
PRECISIONS = ("int16x8", "float")
MAX_FRACTION = 0.25      # raise at most this share of the raisable layers
SHORTLIST = 8            # candidates tried at each greedy step, best single-layer gain first


@dataclass
class Score:
    """A model on the validation split, against the Keras model. ``passed``: the point
    estimates pass the gates (what decides whether recovery is needed); ``clear``: they pass
    with a margin of one standard error of the validation estimate, which a mix must, so that
    a mix chosen by a few validation images still passes on unseen ones."""

    agreement: float | None
    metric_drop: float
    passed: bool
    clear: bool = False
    margins: dict = field(default_factory=dict)

    def key(self) -> tuple:
        return (self.clear, self.passed, self.agreement if self.agreement is not None else 0.0, -self.metric_drop)

    def as_dict(self) -> dict:
        return {"top1_agreement": self.agreement, "metric_drop": self.metric_drop, "passed": self.passed,
                "passed_with_margin": self.clear, "margins": self.margins}


@dataclass
class Recovery:
    needed: bool                          # False: the full int8 model passes as it is
    baseline: Score                       # the full int8 model on the validation split
    model: bytes | None = None            # the recovered model, when one passes
    raised: list[dict] = field(default_factory=list)
    best: Score | None = None             # the best mix reached (passing or not)
    tries: int = 0
    raisable_layers: int = 0


class Validation:
    """Scores a TFLite model on the validation split with the gates of quantized artifacts."""

    def __init__(self, model, x_val, y_val, task: str, rules: dict):
        self.x, self.y, self.task, self.rules = x_val, y_val, task, rules
        self.reference = model.predict(x_val, batch_size=256, verbose=0)
        self.keras_metric = self._metric(self.reference)
        if task == "reconstruction":  # the Keras model's anomaly scores, once for every try
            from edge_runtime.tasks import anomaly_scores

            self.reference_scores = anomaly_scores(self.reference, x_val)

    def _metric(self, outputs) -> float:
        """Accuracy; a regression's MAE; an autoencoder's mean anomaly score (its validation
        split is normal data: no AUC there, the rise of the normal samples' error instead)."""
        if self.task == "classifier":
            return float(np.mean(outputs.argmax(-1) == self.y))
        from edge_runtime.tasks import sample_errors

        return float(np.mean(sample_errors(self.task, outputs, self.x, self.y)))

    def score(self, content: bytes, suffix: str = ".tflite", rules: dict | None = None) -> Score:
        """``rules``: the gates it is held to (default: every gate of quantized artifacts)."""
        from edge_runtime import load

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"candidate{suffix}"
            path.write_bytes(content)
            outputs = load(path).predict(self.x).reshape(self.reference.shape)
        metric = self._metric(outputs)
        if self.task == "classifier":
            drop = self.keras_metric - metric
        elif self.task == "regression":  # a relative rise, as verify's
            drop = (metric - self.keras_metric) / max(self.keras_metric, 1e-12)
        else:  # normal samples only: how far the anomaly scores moved, relative (a lower score is no gain)
            from edge_runtime.tasks import anomaly_scores

            moved = np.abs(anomaly_scores(outputs, self.x) - self.reference_scores)
            drop = float(moved.mean() / max(float(self.reference_scores.mean()), 1e-12))
        agreement = (float(np.mean(outputs.argmax(-1) == self.reference.argmax(-1)))
                     if self.task == "classifier" else None)
        values = {"metric_drop": drop, "top1_agreement": agreement}
        margins = self._margins(outputs)

        def passes(margin_scale: float) -> bool:
            return all(values.get(name) is None or (
                values[name] <= limit - margin_scale * margins.get(name, 0.0) + 1e-12 if op == "<=" else
                values[name] >= limit + margin_scale * margins.get(name, 0.0) - 1e-12)
                for name, (op, limit) in (self.rules if rules is None else rules).items() if name in values)

        return Score(agreement, float(drop), passes(0.0), passes(1.0), margins)

    def _margins(self, outputs) -> dict[str, float]:
        """One standard error of each gated figure on this validation split: of a proportion
        at its gate's threshold for the agreement, of the paired difference for the drop."""
        if self.task != "classifier":
            return {}
        n = len(self.y)
        margins = {}
        if "top1_agreement" in self.rules:
            limit = self.rules["top1_agreement"][1]
            margins["top1_agreement"] = float(np.sqrt(max(limit * (1 - limit), 1.0 / n) / n))
        reference_right, right = self.reference.argmax(-1) == self.y, outputs.argmax(-1) == self.y
        lost, gained = np.mean(reference_right & ~right), np.mean(~reference_right & right)
        margins["metric_drop"] = float(np.sqrt(max(lost + gained - (lost - gained) ** 2, 1.0 / n) / n))
        return margins


def recover_int8(model, full_int8: bytes, calibration: np.ndarray, x_val, y_val, task: str,
                 rules: dict, input_range: tuple[float, float] | None = None) -> Recovery:
    """Leave a passing full-int8 model alone; otherwise search for the fewest raised layers.
    Every candidate is calibrated on ``calibration`` (the full int8's samples), with its input
    quantized over ``input_range`` (every valid input, not just the calibration samples')."""
    if len(x_val) == 0:
        from pipeline.core.errors import UsageError

        raise UsageError("int8 recovery scores each try on the validation split, and this run "
                         "has none: train or import with a validation fraction above 0")
    validation = Validation(model, x_val, y_val, task, rules)
    baseline = validation.score(full_int8)
    if baseline.passed:
        return Recovery(needed=False, baseline=baseline)
    from pipeline.formats.tflite import float_tflite_with_signature

    float_model = float_tflite_with_signature(model)
    search = _Search(_raisable_layers(float_model), validation, PRECISIONS,
                     lambda raised, precision: quantize_mixed(float_model, calibration, raised, precision, input_range))
    return search.run(baseline)


def recover_onnx_int8(model, float_proto, full_int8: bytes, calibration: np.ndarray, x_val, y_val, task: str,
                      rules: dict, input_range: tuple[float, float] | None = None) -> Recovery:
    """The same for the QDQ int8 ONNX: the fewest nodes left float (ONNX Runtime's
    ``nodes_to_exclude``), every try calibrated on the full int8's samples with the input over
    ``input_range``. ``Recovery.model`` is the serialized ONNX model."""
    from pipeline.formats.onnx import prepare_for_quantization, quantizable_nodes, quantize_prepared

    if len(x_val) == 0:
        from pipeline.core.errors import UsageError

        raise UsageError("int8 recovery scores each try on the validation split, and this run "
                         "has none: train or import with a validation fraction above 0")
    validation = Validation(model, x_val, y_val, task, rules)
    baseline = validation.score(full_int8, ".onnx")
    if baseline.passed:
        return Recovery(needed=False, baseline=baseline)
    prepared = prepare_for_quantization(float_proto)

    def make(raised: list[tuple[str, str]], precision: str) -> bytes:
        return quantize_prepared(prepared, calibration, exclude=[name for _, name in raised],
                                 input_range=input_range).SerializeToString()

    search = _Search(quantizable_nodes(prepared), validation, ("float",), make, suffix=".onnx", named="node")
    return search.run(baseline)


class _Search:
    """Moves are a layer, or a layer with the one after it (a raised layer's output feeds the
    next layer, which would otherwise requantize it to int8). Each move is tried alone and
    ranked; then the best moves are combined greedily, once per precision (int16 activations
    before float); ``make(raised, precision)`` quantizes a try."""

    def __init__(self, candidates: list[tuple[str, str]], validation: Validation, precisions: tuple[str, ...],
                 make, *, suffix: str = ".tflite", named: str = "tensor"):
        self.candidates, self.validation, self.precisions, self.make = candidates, validation, precisions, make
        self.suffix, self.named = suffix, named
        self.limit = max(1, int(len(self.candidates) * MAX_FRACTION))
        self.tries = 0

    def _try(self, raised: list[tuple[str, str]], precision: str) -> tuple[bytes, Score]:
        self.tries += 1
        model = self.make(raised, precision)
        return model, self.validation.score(model, self.suffix)

    def run(self, baseline: Score) -> Recovery:
        result = Recovery(needed=True, baseline=baseline, raisable_layers=len(self.candidates))
        first = self.precisions[0]
        model, score = self._try([], first)  # this quantizer's own full int8 may pass
        result.best = score
        if score.clear:
            result.model = model
            return self._done(result, [], first, score)
        # Each precision's greedy search; the mix with the fewest raised layers wins (int16
        # activations on a tie). Measured on MLPerf ResNet-8 / CIFAR-10: int16 needed 3 layers,
        # a convolution among them (4x the full int8's latency: int16 convolutions have no fast
        # kernels), float 2 (the classifier head, as fast as the full int8).
        found = []
        for precision in self.precisions:
            mix = self._greedy(precision, result)
            if mix:
                found.append((len(mix[0]), self.precisions.index(precision), precision, mix))
        result.tries = self.tries
        if not found:
            return result
        _, _, precision, (chosen, model, score) = min(found, key=lambda f: f[:2])
        result.model, result.best = model, score
        return self._done(result, chosen, precision, score)

    def _greedy(self, precision: str, result: Recovery) -> tuple[list, bytes, Score] | None:
        ranked = self._ranked(precision)
        chosen: list[tuple[str, str]] = []
        while len(chosen) < self.limit:
            options = [_union(chosen, move) for move in ranked[:SHORTLIST]]
            options = [o for o in options if len(chosen) < len(o) <= self.limit]
            if not options:
                return None
            tried = [(option, *self._try(option, precision)) for option in options]
            chosen, model, score = max(tried, key=lambda t: (t[2].clear, -len(t[0]), *t[2].key()[1:]))
            if score.key() > result.best.key():
                result.best = score
            if score.clear:
                return chosen, model, score
        return None

    def _ranked(self, precision: str) -> list[tuple[tuple[str, str], ...]]:
        """Every move tried alone, the most helpful first (fewer layers first on a tie)."""
        moves = [(c,) for c in self.candidates] + list(zip(self.candidates, self.candidates[1:]))
        moves = [m for m in moves if len(m) <= self.limit]
        scores = {m: self._try(list(m), precision)[1] for m in moves}
        return sorted(moves, key=lambda m: (scores[m].key(), -len(m)), reverse=True)

    def _done(self, result: Recovery, chosen, precision: str, score: Score) -> Recovery:
        result.tries = self.tries
        result.raised = [{"op": op, self.named: tensor, "precision": precision,
                          "why": f"validation agreement {_pct(result.baseline.agreement)} → "
                                 f"{_pct(score.agreement)} with the layers before it raised"}
                         for op, tensor in chosen]
        return result


def _union(chosen: list, move: tuple) -> list:
    return chosen + [layer for layer in move if layer not in chosen]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _raisable_layers(float_model: bytes) -> list[tuple[str, str]]:
    """(op, output tensor name) of every op a recipe can raise, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.litert_compat import op_outputs
    from edge_runtime.quiet import quiet_native

    with quiet_native():
        interpreter = Interpreter(model_content=float_model)
    return [(op, tensor) for op, tensor in op_outputs(interpreter) if op in RAISABLE]


def quantize_mixed(float_model: bytes, calibration: np.ndarray, raised: list[tuple[str, str]],
                   precision: str, input_range: tuple[float, float] | None = None) -> bytes:
    """int8 weights and activations, except the ``raised`` layers: int16 activations (with
    int8 weights) or float. Calibrated on ``calibration`` (model-ready samples); the model's
    input over ``input_range`` when given (so no valid input saturates)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    from edge_runtime.quiet import quiet_native
    from pipeline.formats.tflite import SIGNATURE, SIGNATURE_INPUT

    with quiet_native(), contextlib.redirect_stdout(io.StringIO()):  # it prints size reports
        try:
            qt = quantizer.Quantizer(bytearray(float_model))
            qt.load_quantization_recipe(recipe.static_wi8_ai8())
            for op, tensor in raised:
                operation = getattr(qtyping.TFLOperationName, op)
                # An op's "scope" is its output tensor names, each followed by ';'.
                exact = f"^{re.escape(tensor)};"
                if precision == "int16x8":
                    qt.add_static_config(regex=exact, operation_name=operation,
                                         activation_num_bits=16, weight_num_bits=8)
                else:
                    qt.update_quantization_recipe(regex=exact, operation_name=operation,
                                                  algorithm_key=AlgorithmName.NO_QUANTIZE)
            # LiteRT Quantizer's own calibration (a moving average of one-sample ranges), on
            # purpose: over the global range (pipeline.formats.litert_quantizer.calibrate),
            # recovery of the MLPerf ResNet-8 picked one CONV_2D in int16x8 (validation
            # agreement 98.54%) that failed on the test images (96.85%) at 7.8x int8's p50; this
            # way it keeps the float head, which generalizes. A measured choice to come.
            statistics = qt.calibrate({SIGNATURE: [{SIGNATURE_INPUT: sample[None].astype(np.float32)}
                                                   for sample in calibration]})
            if input_range is not None:
                _widen_input(statistics, float_model, input_range)
            return bytes(qt.quantize(statistics).quantized_model)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds
            from edge_runtime.errors import first_line

            raise ConversionError(f"ai-edge-quantizer could not quantize the mix: {first_line(exc)}") from None


def _widen_input(statistics: dict, float_model: bytes, input_range: tuple[float, float]) -> None:
    """Set the calibrated range of the model's input tensor to ``input_range`` (at least the
    calibration samples' own), so every valid input is representable."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.quiet import quiet_native

    with quiet_native():
        name = Interpreter(model_content=float_model).get_input_details()[0]["name"]
    found = statistics.get(name)
    if not isinstance(found, dict) or "min" not in found or "max" not in found:
        return
    low, high = input_range
    found["min"] = np.minimum(np.asarray(found["min"]), np.float32(low)).astype(np.asarray(found["min"]).dtype)
    found["max"] = np.maximum(np.asarray(found["max"]), np.float32(high)).astype(np.asarray(found["max"]).dtype)


def input_range(preprocessing: dict, x_train) -> tuple[float, float]:
    """Every value a valid model input can take: the raw dtype's limits through the
    preprocessing (uint8 pixels: 0 and 255, scaled), or for float raw data the training
    split's own extremes (``x_train``: model-ready samples, or an iterable of chunks of them)."""
    from edge_runtime.preprocessing import apply_preprocessing

    raw = np.dtype(preprocessing.get("raw_dtype") or "float32")
    if raw.kind in "iu":
        info = np.iinfo(raw)
        ends = apply_preprocessing(np.array([[info.min], [info.max]], dtype=np.float32), preprocessing)
        return float(ends.min()), float(ends.max())
    chunks = [x_train] if isinstance(x_train, np.ndarray) else x_train
    lows, highs = zip(*((float(np.min(c)), float(np.max(c))) for c in chunks if np.size(c)))
    return min(lows), max(highs)


def samples_to_tell(rules: dict) -> int | None:
    """Validation samples below which even a perfect agreement cannot be told apart from the
    agreement gate at 95% (the Wilson lower bound of 100% reaches the threshold)."""
    from pipeline.core.stats import proportion_samples_needed

    if "top1_agreement" not in rules:
        return None
    return proportion_samples_needed(1.0, rules["top1_agreement"][1])
