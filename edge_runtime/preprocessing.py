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

from edge_runtime.errors import InputError


def _integer_raw(spec: Mapping[str, Any]) -> np.iinfo | None:
    try:
        dtype = np.dtype(spec.get("raw_dtype") or "float32")
    except TypeError:
        return None
    return np.iinfo(dtype) if dtype.kind in "iu" else None


_RAW_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float16", "float32", "float64")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def spec_problems(spec: Any) -> list[str]:
    """What is wrong with a preprocessing spec read from a file (empty: nothing)."""
    if not isinstance(spec, Mapping):
        return [f"preprocessing must be an object, got {type(spec).__name__}"]
    problems = []
    if spec.get("raw_dtype") is not None and spec.get("raw_dtype") not in _RAW_DTYPES:
        problems.append(f"preprocessing.raw_dtype must be one of {', '.join(_RAW_DTYPES)}, "
                        f"got {spec.get('raw_dtype')!r}")
    scale = spec.get("scale")
    if scale is not None and not (_is_number(scale) and scale > 0):
        problems.append(f"preprocessing.scale must be a positive number, got {scale!r}")
    shape = spec.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        problems.append(f"preprocessing.input_shape must be a list of positive integers, got {shape!r}")
    channels = shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) else None
    for key in ("mean", "std"):
        value = spec.get(key)
        values = value if isinstance(value, list) else [value]
        if value is None:
            continue
        if not values or not all(_is_number(v) for v in values) or (key == "std" and any(v == 0 for v in values)):
            problems.append(f"preprocessing.{key} must be a {'nonzero ' if key == 'std' else ''}number or a "
                            f"list of them, got {value!r}")
        elif isinstance(value, list) and len(value) not in (1, channels):
            problems.append(f"preprocessing.{key} has {len(value)} values for inputs of {channels} channels")
    names = spec.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        problems.append("preprocessing.class_names must be a list of strings")
    return problems


def check_raw_input(raw: np.ndarray, spec: Mapping[str, Any],
                    preprocessed_hint: str = "so pass them without --raw") -> None:
    """Refuse raw samples that cannot be what the data set's raw samples were (for example
    floats already scaled to [0, 1] where the model was trained from uint8 pixels)."""
    limits = _integer_raw(spec)
    if limits is None or raw.dtype.kind not in "fiub" or raw.size == 0:
        return
    low, high = float(np.min(raw)), float(np.max(raw))
    if raw.dtype.kind == "f" and (not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw))):
        raise InputError(f"raw input should hold {spec['raw_dtype']} values like the training data; "
                         f"got non-integer floats in [{low:.3g}, {high:.3g}]: they look already "
                         f"preprocessed, {preprocessed_hint}")
    if low < limits.min or high > limits.max:
        raise InputError(f"raw input spans [{low:g}, {high:g}], outside {spec['raw_dtype']}'s "
                         f"[{limits.min}, {limits.max}]")


def check_model_input(x: np.ndarray, spec: Mapping[str, Any]) -> None:
    """Refuse model input that cannot have come out of the preprocessing (raw pixels fed as
    model input): the range of raw values through ``spec``, with 5% slack."""
    limits = _integer_raw(spec)
    if limits is None or x.size == 0 or x.dtype.kind not in "fiub":
        return
    if x.dtype.kind in "iu" and spec.get("scale") not in (None, 1.0):
        raise InputError(f"got {x.dtype} input, which looks like raw samples: pass --raw "
                         f"(raw=True) so the sidecar's preprocessing is applied")
    ends = apply_preprocessing(np.array([[limits.min], [limits.max]], dtype=np.float32), spec)
    low, high = float(ends.min()), float(ends.max())
    slack = 0.05 * (high - low)
    finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
    if finite.size and (float(finite.min()) < low - slack or float(finite.max()) > high + slack):
        raise InputError(f"input values span [{float(finite.min()):.3g}, {float(finite.max()):.3g}] "
                         f"but the model expects [{low:.3g}, {high:.3g}] ({spec['raw_dtype']} samples "
                         f"through the sidecar's preprocessing): pass raw samples with --raw")


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
