"""``pipeline export --c-array``: an integer TFLite model as C++ source for a TFLite Micro
project: ``model_data.h`` / ``model_data.cc`` with the aligned model bytes, their length, the
measured tensor arena, the input/output quantization and the class names.

Everything written into the source comes from files (the model, its sidecar, the run), so
nothing is pasted in unescaped: class names become escaped C string literals and the symbol
name must be a plain C identifier.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConversionError, UsageError
from pipeline.core.fsutil import write_bytes, write_json

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # fullmatch: no trailing newline
# C23 and C++23 keywords and alternative tokens (a symbol is compiled as both)
_KEYWORDS = frozenset(
    "alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t "
    "char32_t class compl concept const consteval constexpr constinit const_cast continue co_await "
    "co_return co_yield decltype default delete do double dynamic_cast else enum explicit export "
    "extern false float for friend goto if inline int long mutable namespace new noexcept not not_eq "
    "nullptr operator or or_eq private protected public register reinterpret_cast requires restrict "
    "return short signed sizeof static static_assert static_cast struct switch template this "
    "thread_local throw true try typedef typeid typename typeof typeof_unqual union unsigned using "
    "virtual void volatile wchar_t while xor xor_eq import module final override".split())
# Names of the standard headers a firmware project includes beside ours: macros and types.
_STANDARD_NAMES = frozenset(
    "NULL EOF BUFSIZ FILENAME_MAX errno assert offsetof size_t ptrdiff_t max_align_t nullptr_t "
    "std main int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t intptr_t uintptr_t "
    "CHAR_BIT INT_MAX INT_MIN UINT_MAX SIZE_MAX stdin stdout stderr".split())
# What model_data.h itself declares: a symbol with one of these names would clash with it.
_GENERATED_NAMES = frozenset(
    "kTensorArenaSize kInputScale kInputZeroPoint kOutputScale kOutputZeroPoint kNumClasses "
    "kClassNames kInputDims kInputBytes kInputShape kOutputDims kOutputBytes kOutputShape kNumOps".split())
# TFLite Micro wants the model 16-byte aligned (its flatbuffer tables hold 16-byte fields).
ALIGNMENT = 16
BYTES_PER_LINE = 12


def check_symbol(symbol: str) -> None:
    """A name that compiles as a C and a C++ global, beside the header's own declarations."""
    reason = None
    if not isinstance(symbol, str) or not _IDENTIFIER.fullmatch(symbol):
        reason = "must be a C identifier of at most 63 characters (letters, digits, _; not starting with a digit)"
    elif symbol in _KEYWORDS:
        reason = "is a C or C++ keyword"
    elif "__" in symbol or re.match(r"_[A-Z_]", symbol) or symbol.startswith("_"):
        reason = "is a reserved identifier (a leading underscore or a double underscore)"
    elif symbol in _STANDARD_NAMES:
        reason = "is a name the C/C++ standard headers define"
    elif {symbol, f"{symbol}_len"} & (_GENERATED_NAMES | {f"{symbol.upper()}_MODEL_DATA_H_"} - {symbol}):
        reason = f"clashes with a name model_data.h declares ({', '.join(sorted(_GENERATED_NAMES))})"
    if reason:
        raise UsageError(f"--symbol {symbol!r} {reason}: choose another, e.g. g_model_data")


def c_string(text: str) -> str:
    """``text`` as a C string literal: printable ASCII as is, every other byte (quotes,
    backslashes, newlines, UTF-8) as a three-digit octal escape; ``?`` too (no trigraphs)."""
    out = []
    for byte in str(text).encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\?':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def export_c_array(run_dir: Path, artifact: str, out_dir: Path, *, symbol: str = "g_model_data",
                   metadata: bool = False) -> dict:
    """Write ``model_data.h`` and ``model_data.cc`` for ``artifact`` of the run; return what
    they hold (also written as ``model_data.json`` beside them). The TFLite Metadata and its
    packed label file are left out of the array unless ``metadata`` (they cost flash and
    TFLite Micro never reads them: the header carries the class names instead)."""
    from edge_runtime import load
    from edge_runtime.artifact import read_sidecar

    check_symbol(symbol)
    path = Path(artifact) if Path(artifact).is_file() else run_dir / artifact
    if not path.is_file():
        raise UsageError(f"artifact {artifact} not found in {run_dir}: run `pipeline quantize --int8` first")
    if path.suffix != ".tflite":
        raise UsageError(f"{path.name} is not a TFLite model: a C array is for TFLite Micro")
    runner = load(path)  # checked against its sidecar's sha256 before anything is embedded
    sidecar = read_sidecar(path) or {}
    data = path.read_bytes()
    kept = data
    if not metadata:
        from pipeline.formats.tflite_meta import without_metadata

        try:
            kept = without_metadata(data)
        except Exception as exc:  # noqa: BLE001 - a flatbuffer that does not parse, any way it fails
            raise ConversionError(f"cannot read {path.name} as a TFLite flatbuffer ({type(exc).__name__}): "
                                  f"pass --metadata to embed its bytes as they are") from None
    arena = _arena_bytes(path)
    class_names = list(sidecar.get("class_names") or
                       (sidecar.get("preprocessing") or {}).get("class_names") or [])
    facts = {
        "artifact": path.name, "symbol": symbol, "length": len(kept), "arena_bytes": arena,
        "metadata": metadata, "metadata_bytes_left_out": len(data) - len(kept),
        "input": runner.input.as_dict(), "output": runner.outputs[0].as_dict(),
        "class_names": class_names, "ops": sorted(set(load(path, xnnpack=False).op_names())),
        "preprocessing": {key: (sidecar.get("preprocessing") or {}).get(key)
                          for key in ("raw_dtype", "scale", "mean", "std")},
    }
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    header = _header(facts)
    source = _source(facts, kept)
    written = [write_bytes(out_dir / "model_data.h", header.encode()),
               write_bytes(out_dir / "model_data.cc", source.encode()),
               write_bytes(out_dir / "model_example.cc", _example(facts).encode())]
    written.append(write_json(out_dir / "model_data.json", facts))
    return {**facts, "files": [str(p) for p in written]}


OUTPUT_FILES = ("model_data.h", "model_data.cc", "model_data.json", "model_example.cc")


def _check_out_dir(out_dir: Path) -> None:
    """The export replaces only what an earlier export wrote: a ``model_data.h``/``.cc`` of the
    user's own (no ``model_data.json`` of ours beside it) is refused, like ``train --out``."""
    from pipeline.core.errors import RunDirError
    from pipeline.core.fsutil import read_json

    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file, not a directory")
    present = [name for name in OUTPUT_FILES if os.path.lexists(out_dir / name)]
    if not present:
        return
    marker = out_dir / "model_data.json"
    try:
        ours = read_json(marker) if marker.is_file() and not marker.is_symlink() else None
    except (OSError, ValueError):
        ours = None
    if not (isinstance(ours, dict) and isinstance(ours.get("symbol"), str) and isinstance(ours.get("artifact"), str)
            and all(not (out_dir / name).is_symlink() and (out_dir / name).is_file() for name in present)):
        raise RunDirError(f"{out_dir} holds {', '.join(present)} that an export did not write: choose "
                          f"another --out (nothing was written)")


def _arena_bytes(path: Path) -> int:
    """The smallest arena the model runs in on TFLite Micro, measured now (a second or so)."""
    from pipeline.formats.micro import MicroError, run_micro

    try:
        return run_micro(path).arena_bytes
    except MicroError as exc:
        raise ConversionError(f"cannot measure the tensor arena of {path.name}: {exc}") from None


def _guard(symbol: str) -> str:
    return f"{symbol.upper()}_MODEL_DATA_H_"


def resolver_method(op: str) -> str:
    """``CONV_2D`` → ``AddConv2D``: the ``tflite::MicroMutableOpResolver`` method that
    registers a builtin op."""
    special = {"UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM", "LSTM": "LSTM"}
    return "Add" + special.get(op, "".join(part.capitalize() if not part[0].isdigit() else part.upper()
                                           for part in op.split("_")))


def _float(value) -> str:
    return f"{float(value)!r}f"


def _tensor_lines(label: str, tensor: dict) -> list[str]:
    shape = [int(d) for d in tensor["shape"]]
    size = int(np.prod(shape)) * np.dtype(tensor["dtype"]).itemsize
    zero_point = int(tensor["zero_point"])
    return [f"// {label}: {tensor['dtype']} {shape}, {size} bytes; real_value = scale * (quantized_value - zero_point)",
            f"enum {{ k{label}Dims = {len(shape)}, k{label}Bytes = {size}, k{label}ZeroPoint = {zero_point} }};",
            f"extern const int k{label}Shape[k{label}Dims];",
            f"#define k{label}Scale {_float(tensor['scale'])}"]


def _raw_to_input(symbol: str, tensor: dict, spec: dict) -> list[str]:
    """A ``static inline`` function from one raw sample value (as the data set stores it) to the
    value the model's input tensor takes: the sidecar's preprocessing, then its quantization."""
    def per_channel(key, default):
        value = spec.get(key)
        values = value if isinstance(value, list) else [default if value is None else value]
        return values
    means, stds = per_channel("mean", 0.0), per_channel("std", 1.0)
    dtype = np.dtype(tensor["dtype"])
    integer = dtype.kind in "iu"
    lines = ["// One raw sample value (channel >= 0: its index along the last axis) as the model input takes it:",
             f"//   model_input = (raw * {spec.get('scale') or 1:.9g} - mean[channel]) / std[channel]"
             + ("; then round(model_input / kInputScale) + kInputZeroPoint, clamped" if integer else ""),
             f"static inline {'int' if integer else 'float'} {symbol}_input_from_raw(float raw, int channel) {{",
             f"  static const float mean[] = {{{', '.join(_float(m) for m in means)}}};",
             f"  static const float std_[] = {{{', '.join(_float(v) for v in stds)}}};",
             f"  float value = (raw * {_float(spec.get('scale') or 1)} - mean[channel % {len(means)}])"
             f" / std_[channel % {len(stds)}];"]
    if integer:
        limits = np.iinfo(dtype)
        lines += ["  value = value / kInputScale + (float)kInputZeroPoint;",
                  "  value = value < 0 ? value - 0.5f : value + 0.5f;  /* round half away from zero */",
                  f"  if (value < {limits.min}.0f) return {limits.min};",
                  f"  if (value > {limits.max}.0f) return {limits.max};",
                  "  return (int)value;"]
    else:
        lines.append("  return value;")
    return lines + ["}"]


def _header(facts: dict) -> str:
    symbol, names, ops = facts["symbol"], facts["class_names"], facts["ops"]
    macro = f"{symbol.upper()}_ADD_OPS"
    adds = " ".join(f"(resolver).{resolver_method(op)}();" for op in ops)
    return "\n".join([
        f"// {facts['artifact']} for TensorFlow Lite for Microcontrollers; written by",
        "// `pipeline export`. Do not edit: export again instead. Compiles as C (C99) and C++.",
        f"#ifndef {_guard(symbol)}",
        f"#define {_guard(symbol)}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"extern const unsigned char {symbol}[];",
        f"extern const unsigned int {symbol}_len;",
        "",
        "// The smallest tensor arena TFLite Micro ran this model in, measured with TFLM's host",
        "// (64-bit) build; confirm on the target with its RecordingMicroAllocator.",
        f"enum {{ kTensorArenaSize = {facts['arena_bytes']} }};",
        "",
        *_tensor_lines("Input", facts["input"]),
        *_tensor_lines("Output", facts["output"]),
        "",
        *_raw_to_input(symbol, facts["input"], facts["preprocessing"]),
        "",
        f"enum {{ kNumClasses = {len(names)} }};",
        *(["extern const char* const kClassNames[kNumClasses];"] if names else []),
        "",
        f"// The builtin ops it uses: {', '.join(ops)}.",
        f"enum {{ kNumOps = {len(ops)} }};",
        "",
        "#ifdef __cplusplus",
        '}  // extern "C"',
        f"// tflite::MicroMutableOpResolver<kNumOps> resolver; {macro}(resolver);",
        f"#define {macro}(resolver) do {{ {adds} }} while (0)",
        "#endif",
        "",
        f"#endif  // {_guard(symbol)}",
        "",
    ])


def _source(facts: dict, data: bytes) -> str:
    symbol, names = facts["symbol"], facts["class_names"]
    lines = [f"// {facts['artifact']}: {len(data)} bytes. Written by `pipeline export`.",
             '#include "model_data.h"', "",
             f"alignas({ALIGNMENT}) const unsigned char {symbol}[] = {{"]
    for start in range(0, len(data), BYTES_PER_LINE):
        chunk = data[start:start + BYTES_PER_LINE]
        lines.append("    " + ", ".join(f"0x{byte:02x}" for byte in chunk) + ",")
    lines += ["};", f"const unsigned int {symbol}_len = {len(data)};", ""]
    for label in ("Input", "Output"):
        shape = ", ".join(str(int(d)) for d in facts[label.lower()]["shape"])
        lines.append(f"const int k{label}Shape[k{label}Dims] = {{{shape}}};")
    lines.append("")
    if names:
        lines.append("const char* const kClassNames[kNumClasses] = {")
        lines += [f"    {c_string(name)}," for name in names]
        lines += ["};", ""]
    return "\n".join(lines)


def _example(facts: dict) -> str:
    """A TFLite Micro program that runs the model once and prints its top class: what to build
    first on a board (its input is zeros until the board's sensor fills it through
    ``<symbol>_input_from_raw``)."""
    symbol = facts["symbol"]
    ctype = {"int8": "int8_t", "int16": "int16_t", "uint8": "uint8_t", "float32": "float"}[facts["input"]["dtype"]]
    field = {"int8_t": "int8", "int16_t": "i16", "uint8_t": "uint8", "float": "f"}[ctype]
    out_field = {"int8": "int8", "int16": "i16", "uint8": "uint8", "float32": "f"}[facts["output"]["dtype"]]
    return "\n".join([
        f"// Runs {facts['artifact']} once on TensorFlow Lite for Microcontrollers and prints the top class.",
        "// Build it in a TFLite Micro project beside model_data.cc, e.g. from the tflite-micro repository:",
        "//   make -f tensorflow/lite/micro/tools/make/Makefile  (add this file and model_data.cc to the sources)",
        "// Written by `pipeline export`; the board's own code replaces the zero input.",
        "#include <cstdint>",
        "#include <cstdio>",
        "",
        '#include "model_data.h"',
        '#include "tensorflow/lite/micro/micro_interpreter.h"',
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        '#include "tensorflow/lite/schema/schema_generated.h"',
        "",
        "namespace {",
        "// TFLite Micro wants the arena 16-byte aligned; the measured size plus headroom for the target.",
        "alignas(16) uint8_t tensor_arena[kTensorArenaSize + 1024];",
        "}  // namespace",
        "",
        "int main() {",
        f"  const tflite::Model* model = tflite::GetModel({symbol});",
        "  static tflite::MicroMutableOpResolver<kNumOps> resolver;",
        f"  {symbol.upper()}_ADD_OPS(resolver);",
        "  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, sizeof(tensor_arena));",
        "  if (interpreter.AllocateTensors() != kTfLiteOk) { std::printf(\"AllocateTensors failed\\n\"); return 1; }",
        "  TfLiteTensor* input = interpreter.input(0);",
        "  for (int i = 0; i < kInputBytes / static_cast<int>(sizeof(" + ctype + ")); ++i) {",
        "    // raw sample value i (channel i % kInputShape[kInputDims - 1]) from the board's sensor:",
        f"    input->data.{field}[i] = static_cast<{ctype}>(",
        f"        {symbol}_input_from_raw(0.0f, i % kInputShape[kInputDims - 1]));",
        "  }",
        "  if (interpreter.Invoke() != kTfLiteOk) { std::printf(\"Invoke failed\\n\"); return 1; }",
        "  TfLiteTensor* output = interpreter.output(0);",
        "  int best = 0;",
        "  const int count = static_cast<int>(output->bytes / sizeof(output->data." + out_field + "[0]));",
        "  for (int i = 1; i < count; ++i) {",
        f"    if (output->data.{out_field}[i] > output->data.{out_field}[best]) best = i;",
        "  }",
        ("  std::printf(\"top class %d (%s)\\n\", best, best < kNumClasses ? kClassNames[best] : \"?\");"
         if facts["class_names"] else "  std::printf(\"top output %d\\n\", best);"),
        "  return 0;",
        "}",
        "",
    ])
