"""The allowed range of every numeric option, shared by the command line and the config file,
so a zero, a negative, a NaN or an absurdly large value is one clear error before any work."""
from __future__ import annotations

import math

from pipeline.core.errors import UsageError

# name: (lowest, highest), inclusive
LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 100_000), "batch_size": (1, 1 << 20), "learning_rate": (1e-12, 10.0),
    "early_stopping": (0, 100_000), "seed": (0, 2**32 - 1), "image_size": (4, 4096),
    "val_fraction": (0.0, 0.9), "test_fraction": (0.0, 0.9),
    "fine_tune_epochs": (0, 100_000), "calibration_samples": (0, 1_000_000), "opset": (9, 18),
    "runs": (1, 10_000_000), "warmup": (0, 1_000_000), "min_seconds": (0.0, 3600.0),
    "warmup_seconds": (0.0, 3600.0), "threads": (1, 1024),
    "max_accuracy_drop": (0.0, 1.0), "max_latency_ms": (0.0, 1e9), "max_size_kb": (0.0, 1e12),
    "max_ram_kb": (0.0, 1e9), "max_flash_kb": (0.0, 1e12),
    "qat_epochs": (1, 100_000), "qat_learning_rate": (1e-12, 1.0),
    "input_scale": (0.0, 1e12), "export_samples": (0, 1_000_000), "input_offset": (-1e12, 1e12),
}
# Budgets: 0 is no budget anything could meet (and a ratio to it is a division by zero).
POSITIVE = {"max_latency_ms", "max_size_kb", "max_ram_kb", "max_flash_kb", "input_scale"}


def check(name: str, value, *, label: str | None = None) -> None:
    """Raise a UsageError naming ``label`` (default ``--name``) unless ``value`` is finite and
    within ``LIMITS[name]``; None (unset) passes."""
    if value is None:
        return
    low, high = LIMITS[name]
    positive = name in POSITIVE
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high or (positive and value <= 0)):
        label = label or f"--{name.replace('_', '-')}"
        raise UsageError(f"{label} must lie in {'(' if positive else '['}{low:g}, {high:g}], got {value!r}")
