"""Whether a float TFLite artifact runs on the mobile GPU delegate, op by op.

TensorFlow's model analyzer (``tf.lite.experimental.Analyzer.analyze(...,
gpu_compatibility=True)``) applies the GPU delegate's own per-op checks to the flatbuffer
and prints its findings; this module reads them into a record: ``compatible``, and the ops
that would fall back to the CPU with the delegate's reason. It is a static check of the
graph: a phone's driver may still refuse a model the check accepts.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

_OP = re.compile(r"^\s*Op#(\d+)\s+(\w+)\(")
_WARNING = "GPU COMPATIBILITY WARNING:"


def gpu_compatibility(path: Path) -> dict:
    """``{"compatible": bool, "fallback_ops": [{"node", "op", "reason"}], "checked_by": ...}``."""
    import tensorflow as tf

    from edge_runtime.quiet import quiet_native

    text = io.StringIO()
    with quiet_native(), contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_content=Path(path).read_bytes(), gpu_compatibility=True)
    return parse_report(text.getvalue(), tf.__version__)


def parse_report(text: str, version: str) -> dict:
    fallback, last = [], None
    for line in text.splitlines():
        match = _OP.match(line)
        if match:
            last = (int(match.group(1)), match.group(2))
            continue
        stripped = line.strip()
        if stripped.startswith(_WARNING) and " has GPU delegate compatibility issues" not in stripped and last:
            fallback.append({"node": last[0], "op": last[1], "reason": stripped[len(_WARNING):].strip()[:200]})
    compatible = not fallback and "compatible with GPU delegate" in text
    if not fallback and not compatible:
        raise ValueError("the model analyzer gave no GPU compatibility verdict")
    return {"compatible": compatible, "fallback_ops": fallback,
            "checked_by": f"tf.lite.experimental.Analyzer (TensorFlow {version}), static per-op check"}


def summary(record: dict | None) -> str:
    """One cell of the report: "yes", or the ops that fall back to the CPU (``record`` comes
    from verify.json: anything malformed reads as not checked)."""
    if not isinstance(record, dict):
        return "–"
    fallback = record.get("fallback_ops")
    if record.get("compatible") is True and fallback == []:
        return "yes"
    if record.get("compatible") is False and isinstance(fallback, list) and fallback and all(
            isinstance(entry, dict) and isinstance(entry.get("op"), str) for entry in fallback):
        return f"no: {', '.join(sorted({entry['op'][:40] for entry in fallback}))} on CPU"
    return "not checked"
