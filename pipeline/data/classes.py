"""A classifier's data set from raw samples and class labels: the seeded stratified split,
labels and class names checked, images resized, the preprocessing spec (the common tail of the
loaders in ``pipeline.data.loaders``)."""
from __future__ import annotations

import numpy as np

from pipeline.core.errors import DataError
from pipeline.data.dataset import Dataset, check_class_names


def stratified_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Seeded, stratified split: ``(x_rest, y_rest, x_part, y_part)`` with ``fraction`` in part."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return x, y, x[:0], y[:0]
    counts = np.bincount(y)
    classes = int(np.count_nonzero(counts))
    part = int(np.ceil(len(y) * fraction))
    # Stratify when every class can appear on both sides; tiny data sets fall back to random.
    can_stratify = counts[counts > 0].min() >= 2 and classes <= part <= len(y) - classes
    stratify = y if can_stratify else None
    x_rest, x_part, y_rest, y_part = train_test_split(
        x, y, test_size=fraction, random_state=seed, stratify=stratify)
    return x_rest, y_rest, x_part, y_part


def _finish(name: str, x_train, y_train, x_test, y_test, *, seed: int, val_fraction: float,
            image_size: int | None, class_names: list[str] | None = None) -> Dataset:
    """Common tail of every loader: shape, resize, validation split, preprocessing spec."""
    x_train, x_test = _as_nhwc(x_train, "x_train"), _as_nhwc(x_test, "x_test")
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        labels = np.asarray(y)
        if labels.ndim == 0 or len(x) != len(labels):
            raise DataError(f"data set '{name}': x_{split} has {len(x)} samples but y_{split} "
                            f"has {labels.size if labels.ndim == 0 else len(labels)} labels")
    if image_size is not None and x_train.ndim == 4:
        x_train, x_test = _resize(x_train, image_size), _resize(x_test, image_size)
    y_train, y_test = _as_labels(y_train, "y_train"), _as_labels(y_test, "y_test")
    names = _check_classes(name, y_train, y_test, class_names)
    x_train, y_train, x_val, y_val = stratified_split(x_train, y_train, val_fraction, seed)
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, _spec(x_train, names), names)


def _check_classes(name: str, y_train, y_test, class_names: list[str] | None) -> list[str]:
    """The data set's class names (given, or "0".."N-1"), after checking the labels fit them."""
    if len(y_train) == 0 or len(y_test) == 0:
        raise DataError(f"data set '{name}' is empty: {len(y_train)} training and "
                        f"{len(y_test)} test samples")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if class_names is not None and len(class_names) < num_classes:
        raise DataError(f"data set '{name}' has labels up to {num_classes - 1} but only {len(class_names)} "
                        f"class names: give one name per class (labels 0..N-1)")
    names = class_names or [str(i) for i in range(num_classes)]
    if len(names) < 2:
        raise DataError(f"data set '{name}' has one class ({names[0]!r}): a classifier needs at least two")
    check_class_names(name, names)
    return names


def _spec(x_train: np.ndarray, names: list[str]) -> dict:
    """The preprocessing spec of raw training samples like ``x_train``."""
    integer_pixels = x_train.dtype == np.uint8
    return {
        "raw_dtype": str(x_train.dtype),
        "scale": 1.0 / 255.0 if integer_pixels else 1.0,
        "mean": None,
        "std": None,
        "input_shape": list(x_train.shape[1:]),
        "layout": "NHWC" if x_train.ndim == 4 else "NF",
        "class_names": names,
    }


def _as_nhwc(x, what: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} must hold numbers, got dtype {x.dtype}")
    if x.ndim < 1:
        raise DataError(f"{what} must be an array of samples, got a scalar")
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[..., None]
    return x


def _as_labels(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{what} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{what} has label {int(y.min())}: labels must lie in 0..num_classes-1")
    return y


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import zoom

    if x.shape[1:3] == (size, size):
        return x
    factors = (size / x.shape[1], size / x.shape[2], 1)
    resized = np.stack([zoom(img.astype(np.float32), factors, order=1) for img in x])
    if x.dtype == np.uint8:
        resized = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return resized
