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

    def resolved_gates(self) -> dict[str, dict[str, tuple[str, float]]]:
        from pipeline.core.errors import unknown_name

        gates = {kind: dict(rules) for kind, rules in DEFAULT_GATES.items()}
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
