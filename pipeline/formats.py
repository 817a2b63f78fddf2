"""Capabilities as data: the quantization modes and artifact formats, keyed by name.

These rows drive option checking, conversion dispatch, the verification gates and the
report's columns.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import unknown_name


@dataclass(frozen=True)
class QuantMode:
    name: str
    artifact: str            # file name in the run directory
    needs_calibration: bool
    gate_kind: str           # which default verification gates apply
    description: str


QUANT_MODES: dict[str, QuantMode] = {m.name: m for m in (
    QuantMode("float32", "model_float32.tflite", False, "float32", "no quantization"),
    QuantMode("float16", "model_float16.tflite", False, "float16", "float16 weights"),
    QuantMode("dynamic", "model_dynamic.tflite", False, "quantized",
              "int8 weights, float activations (dynamic range)"),
    QuantMode("int8", "model_int8.tflite", True, "quantized",
              "full integer: int8 weights and activations"),
    QuantMode("int16x8", "model_int16x8.tflite", True, "quantized",
              "int16 activations, int8 weights"),
)}


def quant_mode(name: str) -> QuantMode:
    try:
        return QUANT_MODES[name]
    except KeyError:
        raise unknown_name("quantization mode", name, QUANT_MODES) from None
