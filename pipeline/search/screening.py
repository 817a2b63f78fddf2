"""Screening: a candidate's untrained twin is measured before it is trained, once per
architecture, and architectures over a budget are never trained."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.core.fsutil import make_dirs, read_json, write_bytes, write_json
from pipeline.search.space import SPACES, SearchOptions, _build, _pruned, architecture
from pipeline.search.timer import Timer, _budget_metrics, _over_budget, _timings

log = logging.getLogger("pipeline")


# A candidate whose untrained twin is over a budget by more than this is not trained: a
# trial's trained artifact times within a few percent of its twin (the kernels do not depend
# on the weights), so this only spares trials that would be over budget anyway.
SCREEN_TOLERANCE = 0.05


SCREEN_DRAWS = 2000  # random draws per trial before the oracle gives up finding one that fits


# Draws per trial spent looking for a fitting architecture no trial has had yet, before one
# already tried gets new training choices: the budget question is mostly about architectures.
NEW_ARCHITECTURE_DRAWS = 200


class Screen:
    """A candidate's budgets before it is trained. Latency, size and arena depend on the
    architecture, not on the weights: the candidate built with its initial weights, pruned
    to the same widths and quantized the same way, is measured as a trial would be (once per
    architecture, kept in ``screen.json`` so a resumed search does not measure it again).
    A candidate whose untrained twin is over a budget by more than ``SCREEN_TOLERANCE`` is
    not trained at all; the trial itself still measures the trained artifact."""

    def __init__(self, options: SearchOptions, data, timer: Timer, out: Path):
        self.options, self.data, self.timer = options, data, timer
        self.path, self.dir = out / "screen.json", out / "screen"
        try:
            recorded = read_json(self.path) if self.path.exists() else {}
        except (OSError, ValueError):
            recorded = {}
        self.measured: dict[str, dict] = recorded if isinstance(recorded, dict) else {}

    def summary(self) -> dict:
        over = [key for key, m in self.measured.items() if _screened(m) and m["over"] > SCREEN_TOLERANCE]
        timed = [m["p50_ms"] for m in self.measured.values() if _screened(m)]
        return {"architectures": len(self.measured), "over_budget": len(over), "tolerance": SCREEN_TOLERANCE,
                "fastest_p50_ms": min(timed) if timed else None}

    def p50_ms(self, values: dict) -> float | None:
        """The untrained twin's p50, if it was measured."""
        measured = self.measured.get(architecture(self.options.model, values))
        return measured["p50_ms"] if _screened(measured) else None

    def active(self) -> bool:
        return any(b is not None for b in (self.options.max_latency_ms, self.options.max_size_kb,
                                           self.options.max_ram_kb))

    def fits(self, values: dict) -> bool:
        if not self.active():
            return True
        key = architecture(self.options.model, values)
        if not _screened(self.measured.get(key)):  # new, or damaged
            self.measured[key] = self._measure(values)
            write_json(self.path, self.measured)
        return self.measured[key]["over"] <= SCREEN_TOLERANCE

    def within_budgets(self, values: dict) -> bool:
        """Whether the untrained twin (measured by ``fits``) is within every budget itself."""
        measured = self.measured.get(architecture(self.options.model, values))
        return not self.active() or (_screened(measured) and measured["over"] <= 0.0)

    def timings(self, values: dict) -> list[float]:
        """Every p50 the untrained twin was timed at (none if it was not)."""
        measured = self.measured.get(architecture(self.options.model, values))
        return _timings(measured.get("p50_ms_measured")) if _screened(measured) else []

    def _measure(self, values: dict) -> dict:
        import hashlib

        from pipeline.core.backend import import_keras
        from pipeline.formats.tflite import to_tflite

        keras = import_keras()
        keras.backend.clear_session()
        model = _pruned(_build(self.options.model, self.data, values), values["sparsity"])
        rng = np.random.default_rng(0)
        for variable in model.weights:  # zero biases would be stored once, shared: not the real size
            if variable.path.endswith("bias"):
                variable.assign(rng.normal(0.0, 0.01, tuple(variable.shape)).astype(np.float32))
        make_dirs(self.dir)
        name = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
        artifact = self.dir / f"{name}.tflite"
        calibration = self.data.split("train")[0][:100]
        write_bytes(artifact, to_tflite(model, values["quantization"], calibration=calibration))
        metrics = _budget_metrics(artifact, self.options, self.timer)
        metrics["over"] = max(_over_budget(metrics, self.options).values(), default=0.0)
        shown = ", ".join(f"{k}={values[k]}" for k in (*SPACES[self.options.model], "sparsity", "quantization"))
        log.info("screened %s: p50 %.4f ms, %.1f KiB%s", shown,
                 metrics["p50_ms"], metrics["size_kb"],
                 "" if metrics["over"] <= SCREEN_TOLERANCE else " (over budget: not trained)")
        return metrics


def _screened(entry) -> bool:
    """Whether a ``screen.json`` entry is a measurement (the file may have been edited)."""
    return isinstance(entry, dict) and all(
        isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool) and np.isfinite(entry[k])
        and entry[k] >= 0 for k in ("over", "p50_ms"))
