"""Capabilities as data: the deployment targets a recommendation is made for (``--target``,
``constraints.target``), and which artifacts each can run.

A target names the formats and modes its runtime executes and whether only what TensorFlow
Lite for Microcontrollers measured (arena, flash, parity) counts. The recommendation reads
these rows; it never guesses from a file name.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import unknown_name
from pipeline.formats.kinds import FORMATS, MIXED_INT8, QAT_INT8


@dataclass(frozen=True)
class Target:
    name: str
    formats: tuple[str, ...]          # FORMATS keys its runtime loads
    modes: tuple[str, ...] | None     # the modes whose kernels it has (None: every mode)
    micro: bool                       # only artifacts TFLite Micro ran and passed
    runs: str                         # what runs there, for the recommendation's sentence
    timing: str                       # where its latencies come from

    def cannot_run(self, row: dict) -> str | None:
        """Why this target cannot run the report row's artifact, or None."""
        if row["format"] not in self.formats or (self.modes is not None and row["mode"] not in self.modes):
            return f"target {self.name} runs {self.runs} only"
        if self.micro and row.get("arena_kb") is None:
            return "not measured on TFLite Micro"
        if self.micro and any(gate.startswith("tflm") for gate in row.get("failed_gates", [])):
            return "fails on TFLite Micro"
        return None


# Integer kernels end to end: what TFLite Micro, Ethos-U, the Edge TPU and phone NPUs execute.
# (int8_mixed may hold float layers: TFLite Micro's float kernels run them, an NPU would not.)
_FULL_INT8 = ("int8", QAT_INT8.name)
_MICRO = ("int8", "int16x8", QAT_INT8.name, MIXED_INT8.name)

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("any", tuple(FORMATS), None, False, "every format", "the benchmark host"),
    Target("mcu", ("tflite",), _MICRO, True, "integer TFLite that TFLite Micro ran and passed",
           "the benchmark host, not a board"),
    Target("npu", ("tflite",), _FULL_INT8, False, "fully int8 TFLite",
           "the benchmark host's CPU, not an NPU"),
    Target("phone", ("tflite", "ort"), None, False, "TFLite and .ort", "the benchmark host, not a phone"),
    Target("pi", ("tflite", "onnx", "ort"), None, False, "TFLite, ONNX and .ort",
           "the benchmark host (pass bench.devices to time the Pi itself)"),
)}


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise unknown_name("target", name, TARGETS) from None
