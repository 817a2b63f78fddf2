"""The one definition of input preprocessing, shared by the workstation and the device.

A spec is a plain dict recorded with the data set, in ``train.json`` and in every
artifact's sidecar::

    {"raw_dtype": "uint8", "scale": 1/255, "mean": null, "std": null,
     "input_shape": [28, 28, 1], "layout": "NHWC", "class_names": ["0", ...]}

model input = (raw * scale - mean) / std   (mean/std per channel, optional)
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def apply_preprocessing(raw: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    """Turn raw samples (for example uint8 pixels) into the float32 the model was trained on."""
    x = np.asarray(raw, dtype=np.float32)
    if not spec:
        return x
    scale = spec.get("scale")
    if scale is not None and scale != 1.0:
        x = x * np.float32(scale)
    mean, std = spec.get("mean"), spec.get("std")
    if mean is not None:
        x = x - np.asarray(mean, dtype=np.float32)
    if std is not None:
        x = x / np.asarray(std, dtype=np.float32)
    return x.astype(np.float32, copy=False)
