"""The report's "Quantized:" lines: who made each mode's artifact (LiteRT Quantizer or
TensorFlow's converter) and how its static modes were calibrated, from each variant's
``quantize.json`` (read as untrusted: checked by type first)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core import schemas

QUANTIZED = {"artifacts": {"*": {"mode": str, "?engine": str, "?calibration": (
    {"method": str, "?figure": str, "?validation_samples": schemas.COUNT,
     "?alternatives": {"*": {"value": schemas.NUMBER, "*": Any}}, "*": Any}, None), "*": Any}}, "*": Any}


def describe_calibration(calibration: dict) -> str:
    """``minmax``, or ``auto chose percentile (top1_agreement on 144 validation samples: minmax
    0.9754, ...)`` from a sidecar's or quantize.json's calibration record."""
    if not calibration.get("alternatives"):
        return calibration["method"]
    figures = ", ".join(f"{method} {values['value']:.4g}" for method, values in calibration["alternatives"].items())
    return (f"auto chose {calibration['method']} ({calibration.get('figure', 'closeness')} on "
            f"{calibration.get('validation_samples', '?')} validation samples: {figures})")


def quantization_lines(run_dir: Path, variants: list[Path]) -> list[str]:
    """Per variant: who quantized each mode, and how the static modes were calibrated (with
    each method's figure on the validation split where ``auto`` chose)."""
    lines = []
    for variant in variants:
        record = variant / "quantize.json"
        if not record.exists():
            continue
        artifacts = schemas.load(record, QUANTIZED)["artifacts"]
        label = "base" if variant == run_dir else variant.name
        engines: dict[str, list[str]] = {}
        for entry in artifacts.values():
            engines.setdefault(entry.get("engine", "converter"), []).append(entry["mode"])
        parts = [f"{'LiteRT Quantizer' if engine == 'litert-quantizer' else 'TensorFlow converter'} "
                 f"({', '.join(modes)})" for engine, modes in sorted(engines.items())]
        for entry in artifacts.values():
            calibration = entry.get("calibration")
            if not calibration:
                continue
            parts.append(f"{entry['mode']} calibration: {describe_calibration(calibration)}")
        lines.append(f"{label}: " + "; ".join(parts))
    return lines
