"""Capabilities as data: the target formats, the quantization modes and the artifact kinds
a run holds, keyed by name.

These rows drive option checking, conversion dispatch, which artifacts a stage finds in a run,
the verification gates and cross-runtime pairs, the TFLite Micro and GPU-delegate checks and the
report's columns. Adding a format or a kind is a row here (and a module beside this one).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    # made by LiteRT Quantizer whatever the engine (the converter has no such mode)
    QuantMode("weight_only_int8", "weight_only_int8.tflite", False, "quantized",
              "int8 weights dequantized to float at load, float computation"),
    QuantMode("int4", "int4.tflite", False, "quantized",
              "int4 weights, activations quantized at run time"),
)}


# What `quantize --int8 --recover` writes: int8 with its most sensitive layers raised to int16
# activations or float. Not a mode to ask for: it exists only when full int8 fails its gates.
MIXED_INT8 = QuantMode("int8_mixed", "int8_mixed.tflite", True, "quantized",
                       "int8 except the layers raised to int16 activations or float (--recover)")


# What `quantize --int8 --qat` writes: a fully integer model from quantization-aware training.
# Judged by its accuracy drop against the float model and its agreement with the fake-quant
# model it was converted from (gate kind "qat"), not by agreement with the float model.
QAT_INT8 = QuantMode("int8_qat", "int8_qat.tflite", True, "qat",
                     "full integer, from quantization-aware training (--qat)")
# The fake-quant Keras model a QAT artifact is converted from, beside model.keras.
QAT_MODEL = "model_qat.keras"
PRUNED_QAT_MODEL = "model_pruned_qat.keras"


def mode_spec(name: str) -> QuantMode | None:
    """Any mode an artifact can carry (those asked for by name, and the ones quantize makes)."""
    return QUANT_MODES.get(name) or {MIXED_INT8.name: MIXED_INT8, QAT_INT8.name: QAT_INT8}.get(name)


def quant_mode(name: str) -> QuantMode:
    try:
        return QUANT_MODES[name]
    except KeyError:
        raise unknown_name("quantization mode", name, QUANT_MODES) from None


@dataclass(frozen=True)
class Format:
    name: str          # what --to takes; pipeline.formats.<module> has its ``convert(job)``
    suffix: str
    runtime: str       # what runs it on the device
    module: str        # the module beside this one that makes it
    calibrates: bool   # its conversion quantizes (calibration samples drawn before anything is written)
    description: str


# In the order `pipeline convert` makes them (.ort follows the ONNX it is made from).
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("tflite", ".tflite", "LiteRT", "tflite", False, "TensorFlow Lite flatbuffer"),
    Format("onnx", ".onnx", "ONNX Runtime", "onnx", True, "ONNX graph, with its QDQ int8"),
    Format("ort", ".ort", "ONNX Runtime Mobile", "ort", False, "ONNX Runtime's format (reduced-size builds)"),
)}
TARGETS = tuple(FORMATS)


def converter(name: str):
    """The ``convert(job)`` of format ``name`` (``pipeline convert --to NAME``)."""
    import importlib

    return importlib.import_module(f"pipeline.formats.{FORMATS[name].module}").convert


@dataclass(frozen=True)
class ArtifactKind:
    kind: str                   # the file name after ``model_`` / ``model_pruned_`` (artifact_file)
    format: str                 # a FORMATS key
    mode: str                   # a QUANT_MODES key, or MIXED_INT8's
    micro: bool = False         # TFLite Micro runs it (integer kernels only)
    gpu_delegate: bool = False  # the mobile GPU delegate runs it (float models only)
    parity_partner: str | None = None  # the TFLite kind this one is the same model as (cross-runtime)
    ort_source: bool = False    # ``convert --to ort`` makes an ``.ort`` twin of it

    def file(self, pruned: bool = False) -> str:
        return artifact_file(self.kind, pruned)


def _kinds(*rows: ArtifactKind) -> dict[str, ArtifactKind]:
    return {row.kind: row for row in rows}


ARTIFACT_KINDS: dict[str, ArtifactKind] = _kinds(
    ArtifactKind("float32.tflite", "tflite", "float32", gpu_delegate=True),
    ArtifactKind("float16.tflite", "tflite", "float16", gpu_delegate=True),
    ArtifactKind("dynamic.tflite", "tflite", "dynamic"),
    ArtifactKind("int8.tflite", "tflite", "int8", micro=True),
    ArtifactKind("int16x8.tflite", "tflite", "int16x8", micro=True),
    ArtifactKind("weight_only_int8.tflite", "tflite", "weight_only_int8"),
    ArtifactKind("int4.tflite", "tflite", "int4"),
    ArtifactKind("int8_mixed.tflite", "tflite", MIXED_INT8.name, micro=True),
    ArtifactKind("int8_qat.tflite", "tflite", QAT_INT8.name, micro=True),
    ArtifactKind("float32.onnx", "onnx", "float32", parity_partner="float32.tflite", ort_source=True),
    ArtifactKind("int8.onnx", "onnx", "int8", parity_partner="int8.tflite", ort_source=True),
    ArtifactKind("int8_tflite.onnx", "onnx", "int8", parity_partner="int8.tflite", ort_source=True),
    ArtifactKind("int8_mixed.onnx", "onnx", MIXED_INT8.name, ort_source=True),
    ArtifactKind("int8_qat.onnx", "onnx", QAT_INT8.name, parity_partner="int8_qat.tflite", ort_source=True),
)

ARTIFACT_SUFFIXES = tuple(f.suffix for f in FORMATS.values())
# Modes TFLite Micro and the GPU delegate run (a mode's TFLite kind says).
MICRO_MODES = tuple(k.mode for k in ARTIFACT_KINDS.values() if k.format == "tflite" and k.micro)
GPU_DELEGATE_MODES = tuple(k.mode for k in ARTIFACT_KINDS.values() if k.format == "tflite" and k.gpu_delegate)
# Integer modes one asks for by name: what a microcontroller or an NPU runs.
INTEGER_MODES = tuple(m for m in QUANT_MODES if m in MICRO_MODES)
ORT_SOURCES = tuple(k.kind for k in ARTIFACT_KINDS.values() if k.ort_source)
# The same model in two runtimes: (TFLite kind, ONNX kind).
PARITY_PAIRS = tuple((k.parity_partner, k.kind) for k in ARTIFACT_KINDS.values() if k.parity_partner)


def run_artifacts(run_dir: Path, names: list[str] | None = None) -> list[Path]:
    """The deployable artifacts of a run (``model*`` in one of FORMATS), in a stable order;
    ``names`` picks some by file name (an unknown one is a usage error naming the closest)."""
    found = sorted(p for p in run_dir.iterdir() if p.suffix in ARTIFACT_SUFFIXES and p.name.startswith("model"))
    if names:
        by_name = {p.name: p for p in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise unknown_name("artifact", missing[0], by_name)
        found = [by_name[n] for n in names]
    return found
