"""ONNX Runtime Mobile's ``.ort`` format, made by ONNX Runtime's own converter
(``python -m onnxruntime.tools.convert_onnx_models_to_ort``), one model at a time in a
directory of its own, in a child process (the tool prints, and may fail, in ways of its own).

"Fixed" optimization style (the converter's default, and its advice for the CPU execution
provider): the graph is optimized once, here, and saved; a phone loads it without optimizing
again. ``--target_platform arm`` is what phones run, and ``.ort`` files made for it load on
x86-64 too, so the same file is verified here and shipped.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.core.errors import ConversionError

TARGET_PLATFORM = "arm"
OPTIMIZATION_STYLE = "Fixed"


def onnx_to_ort(onnx_path: Path) -> bytes:
    """The ``.ort`` bytes of ``onnx_path``."""
    with tempfile.TemporaryDirectory(prefix="pipeline-ort-") as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(Path(onnx_path).read_bytes())
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(source),
                   "--output_dir", str(out), "--optimization_style", OPTIMIZATION_STYLE,
                   "--target_platform", TARGET_PLATFORM]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"ONNX Runtime's .ort converter took over 10 minutes on "
                                  f"{Path(onnx_path).name}") from None
        made = sorted(out.glob("*.ort"))
        if done.returncode != 0 or len(made) != 1:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise ConversionError(f".ort conversion of {Path(onnx_path).name} failed: {reason.strip()[:300]}")
        return made[0].read_bytes()


def ort_name(onnx_name: str) -> str:
    return onnx_name[: -len(".onnx")] + ".ort"
