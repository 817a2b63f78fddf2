"""The verify settings: the default gates per artifact kind (see ``formats.kinds``' gate
kinds), their overrides from ``--gate`` or ``verify.gates``, and the microcontroller budgets.
Quantize's recovery and convert's QDQ recovery judge by the same gates."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.config.fields import per_command
from pipeline.core.errors import UsageError

# Default gates per artifact kind: (metric, comparison, threshold).
DEFAULT_GATES: dict[str, dict[str, tuple[str, float]]] = {
    "float32": {"max_abs_error": ("<=", 1e-4), "top1_agreement": (">=", 1.0)},
    "float16": {"max_abs_error": ("<=", 1e-2)},
    "quantized": {"metric_drop": ("<=", 0.01), "top1_agreement": (">=", 0.98)},
    # Quantization-aware training: the accuracy drop against the float model, and agreement
    # with the fake-quant model it was converted from (the parity a conversion can promise).
    "qat": {"metric_drop": ("<=", 0.01), "fake_quant_agreement": (">=", 0.995)},
    # TFLite Micro against LiteRT's reference kernels, for int8 and int16x8 TFLite artifacts.
    "micro": {"top1_agreement": (">=", 0.99)},
}


# A model that is not a classifier has no top-1 answer: its gates instead. An autoencoder's
# metric_drop is the AUC lost (the relative rise of its mean error without labels) and its
# anomaly decisions must agree with Keras's at the sidecar's threshold; a regression's is the
# relative MAE rise, and its outputs' SQNR against Keras's bounds the output error. TFLite
# Micro: its outputs within one quantization step of LiteRT's reference kernels.
# float16's output error is judged relative to the outputs (SQNR), not in absolute units.
# An int8 autoencoder's decisions flip for test samples whose score lies within quantization
# noise of the threshold (measured: 97.5% agreement on digits-anomaly:0 with an AUC drop of
# 0.006): the AUC drop is the primary gate, the decisions' agreement a floor at 95%.
TASK_GATES: dict[str, dict[str, dict[str, tuple[str, float]]]] = {
    "reconstruction": {"float16": {"sqnr_db": (">=", 40.0)},
                       "quantized": {"metric_drop": ("<=", 0.01), "decision_agreement": (">=", 0.95)},
                       "qat": {"metric_drop": ("<=", 0.01)},
                       "micro": {"decision_agreement": (">=", 0.99)}},
    "regression": {"float16": {"sqnr_db": (">=", 40.0)},
                   "quantized": {"metric_drop": ("<=", 0.05), "sqnr_db": (">=", 20.0)},
                   "qat": {"metric_drop": ("<=", 0.05)},
                   "micro": {"metric_drop": ("<=", 0.01)}},
}


def default_gates(task: str = "classifier") -> dict[str, dict[str, tuple[str, float]]]:
    """The default gates per artifact kind for a model of ``task``."""
    gates = {kind: dict(rules) for kind, rules in DEFAULT_GATES.items()}
    if task == "classifier":
        return gates
    for kind, rules in gates.items():
        dropped = ("top1_agreement", "fake_quant_agreement") + (("max_abs_error",) if kind == "float16" else ())
        kept = {m: rule for m, rule in rules.items() if m not in dropped}
        gates[kind] = {**kept, **TASK_GATES[task].get(kind, {})}
    return gates


@dataclass
class VerifyOptions:
    """``verify``: the config file's gate overrides, and what one invocation checks."""

    gates: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> metric -> threshold
    artifacts: list[str] | None = per_command(None)  # names in the run, or paths
    explain: bool = per_command(False)
    explain_top: int = per_command(3)
    strict: bool = per_command(False)  # an inconclusive gate (interval straddling its threshold) fails too
    # Microcontroller budgets: the measured TFLM tensor arena and the model's flash bytes.
    max_ram_kb: float | None = per_command(None)
    max_flash_kb: float | None = per_command(None)

    def validate(self) -> None:
        from pipeline.core.limits import check

        check("max_ram_kb", self.max_ram_kb, label="--ram-kb")
        check("max_flash_kb", self.max_flash_kb, label="--flash-kb")
        self.resolved_gates()

    def resolved_gates(self, task: str = "classifier") -> dict[str, dict[str, tuple[str, float]]]:
        from pipeline.core.errors import unknown_name

        gates = default_gates(task)
        if not isinstance(self.gates, dict):
            raise UsageError(f"verify.gates must be a table of gate kinds, got {self.gates!r}")
        for kind, overrides in self.gates.items():
            if kind not in gates:
                raise unknown_name("gate kind", kind, gates)
            if not isinstance(overrides, dict):
                raise UsageError(f"verify.gates.{kind} must be a table of METRIC = NUMBER, got {overrides!r}")
            for metric, threshold in overrides.items():
                if metric not in GATE_METRICS:
                    raise unknown_name("gate metric", metric, GATE_METRICS)
                gates[kind][metric] = (GATE_METRICS[metric][0], gate_threshold(f"{kind}.{metric}", threshold))
        return gates


# Each gate metric: its comparison and the range a threshold may take (a gate outside it could
# never fail, or never pass: a number a gate cannot use).
GATE_METRICS: dict[str, tuple[str, float, float]] = {
    "max_abs_error": ("<=", 0.0, math.inf), "mean_abs_error": ("<=", 0.0, math.inf),
    "metric_drop": ("<=", 0.0, math.inf), "top1_agreement": (">=", 0.0, 1.0),
    "fake_quant_agreement": (">=", 0.0, 1.0), "sqnr_db": (">=", -math.inf, math.inf),
    "decision_agreement": (">=", 0.0, 1.0), "max_output_difference": ("<=", 0.0, math.inf),
}


def gate_threshold(name: str, value) -> float:
    """A gate's threshold: a finite number in its metric's range, or one error line."""
    _, low, high = GATE_METRICS[name.rpartition(".")[2]]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"gate {name} takes a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        where = " in [0, 1]" if high == 1.0 else " ≥ 0" if low == 0.0 else ""
        raise UsageError(f"gate {name} must be a finite number{where}, got {value!r}")
    return number


def parse_gate(text: str) -> tuple[str, str, float]:
    """``quantized.metric_drop=0.02`` → ("quantized", "metric_drop", 0.02)."""
    key, _, value = text.partition("=")
    kind, _, metric = key.partition(".")
    try:
        return kind.strip(), metric.strip(), float(value)
    except ValueError:
        raise UsageError(f"--gate takes KIND.METRIC=NUMBER (e.g. quantized.metric_drop=0.02), "
                         f"got '{text}'") from None
