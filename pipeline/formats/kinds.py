"""Capabilities as data: the quantization modes and artifact formats, keyed by name.

These rows drive option checking, conversion dispatch, the verification gates and the
report's columns.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import unknown_name


# The models a run holds, and the names of the artifacts made from each.
MODEL = "model.keras"
PRUNED_MODEL = "model_pruned.keras"


def source_model(pruned: bool) -> str:
    return PRUNED_MODEL if pruned else MODEL


def artifact_file(kind: str, pruned: bool = False) -> str:
    """``int8.tflite`` → ``model_int8.tflite``, or ``model_pruned_int8.tflite`` when made from
    the pruned model."""
    return f"{'model_pruned_' if pruned else 'model_'}{kind}"


@dataclass(frozen=True)
class QuantMode:
    name: str
    kind: str                # the artifact's file name after ``model_`` (see artifact_file)
    needs_calibration: bool
    gate_kind: str           # which default verification gates apply
    description: str

    def file(self, pruned: bool = False) -> str:
        return artifact_file(self.kind, pruned)


QUANT_MODES: dict[str, QuantMode] = {m.name: m for m in (
    QuantMode("float32", "float32.tflite", False, "float32", "no quantization"),
    QuantMode("float16", "float16.tflite", False, "float16", "float16 weights"),
    QuantMode("dynamic", "dynamic.tflite", False, "quantized",
              "int8 weights, float activations (dynamic range)"),
    QuantMode("int8", "int8.tflite", True, "quantized",
              "full integer: int8 weights and activations"),
    QuantMode("int16x8", "int16x8.tflite", True, "quantized",
              "int16 activations, int8 weights"),
)}


# What `quantize --int8 --recover` writes: int8 with its most sensitive layers raised to int16
# activations or float. Not a mode to ask for: it exists only when full int8 fails its gates.
MIXED_INT8 = QuantMode("int8_mixed", "int8_mixed.tflite", True, "quantized",
                       "int8 except the layers raised to int16 activations or float (--recover)")


def quant_mode(name: str) -> QuantMode:
    try:
        return QUANT_MODES[name]
    except KeyError:
        raise unknown_name("quantization mode", name, QUANT_MODES) from None
