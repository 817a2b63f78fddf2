"""Data sets of models that are not classifiers: an autoencoder's (anomaly labels 0/1, or none;
test samples grouped by recording) and a regression's (float targets), of vectors and frames of
any rank; and digits as one-class anomaly detection (``digits-anomaly:N``)."""
from __future__ import annotations

import numpy as np

from pipeline.core.errors import DataError
from pipeline.data.dataset import Dataset

PREPROCESSINGS = ("none", "standardize")
RAW_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float16", "float32", "float64")


def finish_for_task(name: str, task: str, arrays: dict, *, seed: int, val_fraction: float,
                    preprocessing: str | None, scale: float = 1.0) -> Dataset:
    """The common tail of an autoencoder's or a regression's data set: checked labels or
    targets, a seeded validation split, the declared preprocessing."""
    from pipeline.core.tasks import UNLABELLED

    x_train, x_test = (_samples(arrays[k], f"{name}: {k}") for k in ("x_train", "x_test"))
    if task == "regression":
        y_train, y_test = (_targets(arrays[k], len(x), f"{name}: {k}")
                           for k, x in (("y_train", x_train), ("y_test", x_test)))
        if y_train.shape[1:] != y_test.shape[1:]:
            raise DataError(f"{name}: y_train has {y_train.shape[1]} targets per sample, y_test {y_test.shape[1]}")
    else:
        y_train = _anomaly_labels(arrays.get("y_train"), len(x_train), f"{name}: y_train")
        if y_train is not None and np.any(y_train != 0):
            raise DataError(f"{name}: y_train marks {int(np.sum(y_train != 0))} samples anomalous: an autoencoder "
                            f"learns normal data, so train it on normal samples only (y_train all 0)")
        y_test = _anomaly_labels(arrays.get("y_test"), len(x_test), f"{name}: y_test")
        y_train = np.full(len(x_train), UNLABELLED if y_test is None else 0, np.int64)
        y_test = np.full(len(x_test), UNLABELLED, np.int64) if y_test is None else y_test
    groups = arrays.get("groups_test")
    if groups is not None:
        groups = _groups(groups, len(x_test), name, task)
    order = np.random.default_rng(seed).permutation(len(x_train))
    cut = int(np.ceil(len(x_train) * val_fraction)) if val_fraction > 0 else 0
    if cut >= len(x_train):
        raise DataError(f"{name}: {len(x_train)} training samples leave none to train on after a "
                        f"{val_fraction:g} validation split")
    val, train = np.sort(order[:cut]), np.sort(order[cut:])
    x_fit = x_train[train]
    spec = preprocessing_spec(x_fit, preprocessing, name, scale)
    return Dataset(name, x_fit, y_train[train], x_train[val], y_train[val], x_test, y_test, spec, [],
                   task=task, groups_test=groups)


def preprocessing_spec(x_train: np.ndarray, preprocessing: str | None, name: str, scale: float = 1.0) -> dict:
    """``none``: the samples are the model's input; ``standardize``: per feature (the last
    axis), the training split's mean and standard deviation, applied identically on the device."""
    choice = preprocessing or "none"
    if choice not in PREPROCESSINGS:
        raise DataError(f"{name}: preprocessing {choice!r} is not one of {', '.join(PREPROCESSINGS)}")
    if str(x_train.dtype) not in RAW_DTYPES:
        raise DataError(f"{name}: samples of dtype {x_train.dtype} (one of {', '.join(RAW_DTYPES)})")
    mean = std = None
    if choice == "standardize":
        axes = tuple(range(x_train.ndim - 1))
        values = x_train.astype(np.float64)
        mean = [float(v) for v in values.mean(axis=axes)]
        std = [float(v) if v > 1e-12 else 1.0 for v in values.std(axis=axes)]
    return {"raw_dtype": str(x_train.dtype), "scale": scale, "mean": mean, "std": std,
            "input_shape": list(x_train.shape[1:]), "layout": "NHWC" if x_train.ndim == 4 else "NF",
            "class_names": []}


def _samples(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise DataError(f"{what} must hold numbers, got dtype {x.dtype}")
    if x.ndim < 2 or not x.shape[0] or not np.prod(x.shape[1:]):
        raise DataError(f"{what} has shape {x.shape}: samples of one or more values each, (N, F) or (N, ...)")
    return x


def _targets(y, count: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "fiu":
        raise DataError(f"{what} must hold float regression targets, got dtype {y.dtype}")
    y = y.reshape(len(y), -1) if y.ndim else y.reshape(1, 1)
    if len(y) != count or y.ndim != 2 or not y.shape[1]:
        raise DataError(f"{what} has {len(y)} targets for {count} samples: one row of targets per sample")
    if not np.all(np.isfinite(y)):
        raise DataError(f"{what} holds {int(np.sum(~np.isfinite(y)))} NaN or inf targets")
    return y.astype(np.float32)


def _anomaly_labels(y, count: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != count:
        raise DataError(f"{what} has shape {y.shape} for {count} samples: one anomaly label (0 or 1) per sample")
    if y.dtype.kind not in "fiub" or not np.all(np.isin(y, (0, 1))):
        odd = y[~np.isin(y, (0, 1))][0].item() if y.dtype.kind in "fiub" else f"dtype {y.dtype}"
        raise DataError(f"{what} must hold anomaly labels 0 (normal) or 1 (anomalous), got {odd}: "
                        f"an autoencoder's labels say which samples are anomalous, not their class")
    return y.astype(np.int64)


def _groups(groups, count: int, name: str, task: str) -> np.ndarray:
    if task != "reconstruction":
        raise DataError(f"{name}: groups_test scores an autoencoder per recording; a {task} model takes none")
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != count:
        raise DataError(f"{name}: groups_test has {groups.size if groups.ndim else 0} entries for {count} test "
                        f"samples: one group id per test sample")
    if groups.dtype.kind not in "iuU":
        raise DataError(f"{name}: groups_test must hold integer or text group ids, got dtype {groups.dtype}")
    return groups


def digits_anomaly(digit: str, *, seed: int, val_fraction: float, test_fraction: float, split) -> Dataset:
    """scikit-learn's 1797 8x8 digits as 64-value vectors (0..16): train and validate on
    digit N only, test on every digit of the held-out split, label 1 for the other digits."""
    from sklearn.datasets import load_digits

    if not (digit.isdigit() and len(digit) == 1):
        raise DataError(f"digits-anomaly takes the normal digit, 0 to 9 (digits-anomaly:0), got {digit!r}")
    bunch = load_digits()
    # float pixel values 0..16 (not uint8: a model's valid input is then the data's own range,
    # not every byte's 0..255 scaled, which would widen the int8 input range sixteen times)
    x = bunch.data.astype(np.float32)
    x_pool, y_pool, x_test, y_test = split(x, bunch.target, test_fraction, seed)
    normal = int(digit)
    x_normal = x_pool[y_pool == normal]
    name = f"digits-anomaly:{digit}"
    return finish_for_task(name, "reconstruction",
                           {"x_train": x_normal, "x_test": x_test, "y_test": (y_test != normal).astype(np.int64)},
                           seed=seed, val_fraction=val_fraction, preprocessing=None,
                           scale=1.0 / 16.0)  # pixel values 0..16, as scikit-learn gives them


def without_labels(dataset: Dataset) -> Dataset:
    """A classifier's data set as an autoencoder trains on it: every sample, no anomaly labels."""
    from pipeline.core.tasks import UNLABELLED

    unlabelled = {f"y_{s}": np.full(dataset.size(s), UNLABELLED, np.int64) for s in ("train", "val", "test")}
    preprocessing = {**dataset.preprocessing, "class_names": []}
    return Dataset(dataset.name, dataset.x_train, unlabelled["y_train"], dataset.x_val, unlabelled["y_val"],
                   dataset.x_test, unlabelled["y_test"], preprocessing, [], task="reconstruction")
