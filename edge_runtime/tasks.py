"""What a model's outputs mean for its task, in numpy alone (the device and the pipeline agree):
a classifier's class scores, an autoencoder's anomaly score (its reconstruction error) and
the decision a threshold gives, a regression's values; ROC AUC with DeLong's interval, the
partial AUC at low false-positive rates, and per-group (per-recording) scores."""
from __future__ import annotations

import numpy as np

TASKS = ("classifier", "reconstruction", "regression")
# Names earlier runs recorded: the zoo's autoencoder was "autoencoder".
ALIASES = {"autoencoder": "reconstruction"}
Z95 = 1.959963984540054
# The partial AUC is read up to this false-positive rate (MLPerf Tiny's anomaly detection: 0.1).
PARTIAL_AUC_MAX_FPR = 0.1


class TaskError(ValueError):
    """Outputs, labels or groups that the task's metric cannot be computed from."""


def normalize_task(task: str | None) -> str:
    """A task name as recorded today (``autoencoder`` was the name of ``reconstruction``)."""
    task = ALIASES.get(task or "classifier", task or "classifier")
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    return task


def _rows(outputs, others, mismatch: str) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 rows, one per sample; ``mismatch`` (formatted with each's values per
    sample) where their rows differ in length."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    others = np.asarray(others, dtype=np.float64).reshape(len(others), -1)
    if outputs.shape != others.shape:
        raise TaskError(mismatch.format(outputs.shape[1], others.shape[1]))
    return outputs, others


def anomaly_scores(outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Each sample's anomaly score: the mean squared error of its reconstruction (float64)."""
    outputs, inputs = _rows(outputs, inputs, "a reconstruction has {} values per sample, its input {}")
    return np.mean((outputs - inputs) ** 2, axis=1)


def absolute_errors(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each sample's mean absolute error of its predicted targets (float64)."""
    outputs, targets = _rows(outputs, targets, "a regression predicts {} values per sample, its targets are {}")
    return np.abs(outputs - targets).mean(axis=1)


def sample_errors(task: str, outputs: np.ndarray, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each sample's error for a model that is not a classifier: an autoencoder's anomaly score
    (against its input), a regression's absolute error (against its targets)."""
    return anomaly_scores(outputs, inputs) if task == "reconstruction" else absolute_errors(outputs, targets)


def group_scores(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray | None):
    """``(scores, labels)`` per group (a group's score is the mean of its samples', as MLPerf
    Tiny scores a clip), or per sample without groups. A group must hold one label."""
    if groups is None:
        return scores, labels
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != len(scores):
        raise TaskError(f"groups_test has {len(groups)} entries for {len(scores)} test samples")
    keys, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    mean = np.bincount(inverse, weights=scores) / counts
    low = np.full(len(keys), np.inf)
    high = np.full(len(keys), -np.inf)
    np.minimum.at(low, inverse, labels)
    np.maximum.at(high, inverse, labels)
    if np.any(low != high):
        raise TaskError(f"group {keys[np.argmax(low != high)]!r} holds normal and anomalous samples: "
                        f"every sample of a group must have its label")
    return mean, low.astype(np.int64)


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their mean rank."""
    out = np.empty(x.shape, dtype=np.float64)
    for row in np.ndindex(x.shape[:-1]):
        values, inverse, counts = np.unique(x[row], return_inverse=True, return_counts=True)
        before = np.cumsum(counts) - counts
        out[row] = (before + (counts + 1) / 2.0)[inverse]
    return out


def delong(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of each row of ``scores`` (k x n) for binary ``labels`` and their covariance
    (DeLong et al. 1988, the midrank algorithm of Sun & Xu 2014)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    labels = np.asarray(labels).reshape(-1)
    positive, negative = scores[:, labels == 1], scores[:, labels == 0]
    m, n = positive.shape[1], negative.shape[1]
    if m == 0 or n == 0:
        raise TaskError(f"the test labels hold only {'normal (0)' if m == 0 else 'anomalous (1)'} samples: "
                        f"ROC AUC needs both")
    tx, ty = _midranks(positive), _midranks(negative)
    tz = _midranks(np.concatenate([positive, negative], axis=1))
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    covariance = (np.atleast_2d(np.cov(v01)) / m if m > 1 else 0.0) + (np.atleast_2d(np.cov(v10)) / n if n > 1 else 0.0)
    return aucs, np.atleast_2d(covariance)


def auc_interval(auc: float, variance: float) -> list[float]:
    half = Z95 * float(np.sqrt(max(variance, 0.0)))
    return [max(0.0, auc - half), min(1.0, auc + half)]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (descending), from (0, 0)."""
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], labels[order] == 1
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]
    tp, fp = np.cumsum(hits)[last], np.cumsum(~hits)[last]
    positives, negatives = max(int(hits.sum()), 1), max(int((~hits).sum()), 1)
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives], np.r_[np.inf, ordered[last]]


def partial_auc(scores: np.ndarray, labels: np.ndarray, max_fpr: float = PARTIAL_AUC_MAX_FPR) -> float:
    """The area under the ROC curve up to ``max_fpr``, McClish-standardized (0.5 is chance,
    1 perfect), as scikit-learn's ``roc_auc_score(max_fpr=...)`` and MLPerf Tiny give it."""
    fpr, tpr, _ = roc_curve(scores, labels)
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x, y = list(fpr[:stop]), list(tpr[:stop])
    if stop < len(fpr):
        x.append(max_fpr)
        y.append(float(np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])))
    area = float(np.trapezoid(y, x))
    low, high = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1.0 + (area - low) / (high - low))


def check_scores(scores: np.ndarray, what: str = "the anomaly score") -> None:
    if not np.all(np.isfinite(scores)):
        raise TaskError(f"{what} is NaN or infinite on {int(np.sum(~np.isfinite(scores)))} samples")
    if len(scores) and np.ptp(scores) == 0:
        raise TaskError(f"{what} is the same ({scores[0]:.6g}) on every test sample: ROC AUC is undefined")


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The device's rule: anomalous when the score is above the threshold."""
    return np.asarray(scores) > threshold


def mean_interval(values: np.ndarray) -> list[float]:
    """The 95% interval of a mean (normal approximation; the samples are the test split's)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    half = Z95 * float(np.std(values, ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return [float(np.mean(values) - half), float(np.mean(values) + half)]
