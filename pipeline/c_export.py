"""``pipeline export --c-array``: an integer TFLite model as C++ source for a TFLite Micro
project: ``model_data.h`` / ``model_data.cc`` with the aligned model bytes, their length, the
measured tensor arena, the input/output quantization and the class names.

Everything written into the source comes from files (the model, its sidecar, the run), so
nothing is pasted in unescaped: class names become escaped C string literals and the symbol
name must be a plain C identifier.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import ConversionError, UsageError
from pipeline.fsutil import write_bytes, write_json

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CPP_KEYWORDS = frozenset(
    "alignas alignof and asm auto bool break case catch char class const constexpr continue "
    "default delete do double else enum explicit export extern false float for friend goto if "
    "inline int long mutable namespace new noexcept not nullptr operator or private protected "
    "public register return short signed sizeof static struct switch template this throw true "
    "try typedef typeid typename union unsigned using virtual void volatile while".split())
# TFLite Micro wants the model 16-byte aligned (its flatbuffer tables hold 16-byte fields).
ALIGNMENT = 16
BYTES_PER_LINE = 12


def check_symbol(symbol: str) -> None:
    if not _IDENTIFIER.match(symbol) or symbol in _CPP_KEYWORDS:
        raise UsageError(f"--symbol must be a C identifier (letters, digits, _; not a keyword), "
                         f"got {symbol!r}")


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


def export_c_array(run_dir: Path, artifact: str, out_dir: Path, *, symbol: str = "g_model_data") -> dict:
    """Write ``model_data.h`` and ``model_data.cc`` for ``artifact`` of the run; return what
    they hold (also written as ``model_data.json`` beside them)."""
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
    arena = _arena_bytes(path)
    class_names = list(sidecar.get("class_names") or
                       (sidecar.get("preprocessing") or {}).get("class_names") or [])
    facts = {
        "artifact": path.name, "symbol": symbol, "length": len(data), "arena_bytes": arena,
        "input": runner.input.as_dict(), "output": runner.outputs[0].as_dict(),
        "class_names": class_names,
    }
    out_dir = Path(out_dir)
    header = _header(facts)
    source = _source(facts, data)
    written = [write_bytes(out_dir / "model_data.h", header.encode()),
               write_bytes(out_dir / "model_data.cc", source.encode())]
    written.append(write_json(out_dir / "model_data.json", facts))
    return {**facts, "files": [str(p) for p in written]}


def _arena_bytes(path: Path) -> int:
    """The smallest arena the model runs in on TFLite Micro, measured now (a second or so)."""
    from pipeline.micro import MicroError, run_micro

    try:
        return run_micro(path).arena_bytes
    except MicroError as exc:
        raise ConversionError(f"cannot measure the tensor arena of {path.name}: {exc}") from None


def _guard(symbol: str) -> str:
    return f"{symbol.upper()}_MODEL_DATA_H_"


def _header(facts: dict) -> str:
    symbol, names = facts["symbol"], facts["class_names"]
    quant = []
    for kind in ("input", "output"):
        tensor = facts[kind]
        label = kind.capitalize()
        quant += [f"constexpr float k{label}Scale = {tensor['scale']!r}f;",
                  f"constexpr int k{label}ZeroPoint = {int(tensor['zero_point'])};"]
    return "\n".join([
        f"// {facts['artifact']} for TensorFlow Lite for Microcontrollers; written by",
        "// `pipeline export --c-array`. Do not edit: export again instead.",
        f"#ifndef {_guard(symbol)}",
        f"#define {_guard(symbol)}",
        "",
        "#include <cstddef>",
        "",
        f"extern const unsigned char {symbol}[];",
        f"extern const unsigned int {symbol}_len;",
        "",
        "// The smallest tensor arena TFLite Micro ran this model in, measured with TFLM's host",
        "// (64-bit) build; confirm on the target with its RecordingMicroAllocator.",
        f"constexpr std::size_t kTensorArenaSize = {facts['arena_bytes']};",
        "",
        "// real_value = scale * (quantized_value - zero_point)",
        *quant,
        "",
        f"constexpr int kNumClasses = {len(names)};",
        *(["extern const char* const kClassNames[kNumClasses];"] if names else []),
        "",
        f"#endif  // {_guard(symbol)}",
        "",
    ])


def _source(facts: dict, data: bytes) -> str:
    symbol, names = facts["symbol"], facts["class_names"]
    lines = [f"// {facts['artifact']}: {len(data)} bytes. Written by `pipeline export --c-array`.",
             '#include "model_data.h"', "",
             f"alignas({ALIGNMENT}) const unsigned char {symbol}[] = {{"]
    for start in range(0, len(data), BYTES_PER_LINE):
        chunk = data[start:start + BYTES_PER_LINE]
        lines.append("    " + ", ".join(f"0x{byte:02x}" for byte in chunk) + ",")
    lines += ["};", f"const unsigned int {symbol}_len = {len(data)};", ""]
    if names:
        lines.append("const char* const kClassNames[kNumClasses] = {")
        lines += [f"    {c_string(name)}," for name in names]
        lines += ["};", ""]
    return "\n".join(lines)
