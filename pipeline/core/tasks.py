"""A run's task and the figures that judge its models: a classifier by accuracy, an
autoencoder by the ROC AUC of its anomaly score (its reconstruction error; the mean error
where the test split has no labels), a regression by MAE and RMSE; each with its 95% interval,
and an artifact against its Keras source by a paired interval of the difference. The numpy
core (scores, DeLong, the ROC curve) is ``edge_runtime.tasks``: the device computes the same."""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.tasks import (
    PARTIAL_AUC_MAX_FPR,
    TASKS,
    Z95,
    TaskError,
    anomaly_scores,
    auc_interval,
    check_scores,
    decide,
    delong,
    group_scores,
    mean_interval,
    normalize_task,
    partial_auc,
    roc_curve,
    sample_errors,
)

__all__ = ["TASKS", "TaskError", "normalize_task", "metric_name", "evaluate", "compare", "threshold_for",
           "loss_for", "target", "UNLABELLED", "roc_points", "HIGHER_IS_BETTER", "test_metric_of",
           "describe_metric"]

# An autoencoder's data set without anomaly labels stores this label on every sample.
UNLABELLED = -1
# The anomaly threshold: this quantile of the validation split's (normal) scores; the device
# says "anomaly" above it (about 5% false positives on normal data).
THRESHOLD_QUANTILE = 0.95
HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "reconstruction_mse": False, "mae": False}


def loss_for(task: str) -> str:
    return "sparse_categorical_crossentropy" if task == "classifier" else "mse"


def target(task: str, x, y):
    """What a model of ``task`` is trained to output for inputs ``x`` with labels ``y``."""
    return x if task == "reconstruction" else y


def labelled(y) -> bool:
    """Whether an autoencoder's test labels say which samples are anomalous."""
    y = np.asarray(y)
    return y.size > 0 and not np.all(y == UNLABELLED)


def metric_name(task: str, y_test) -> str:
    """The metric a run of ``task`` is judged by on test labels ``y_test``."""
    if task == "classifier":
        return "accuracy"
    if task == "regression":
        return "mae"
    return "auc" if labelled(y_test) else "reconstruction_mse"


def _auc_inputs(outputs, x, y, groups):
    scores = anomaly_scores(outputs, x)
    return group_scores(scores, np.asarray(y).reshape(-1), groups)


def evaluate(task: str, outputs, x, y, groups=None) -> dict[str, Any]:
    """The task's metric of one model's ``outputs`` on a split: ``{"metric", "value", "ci95",
    ...}`` (AUC also gives the partial AUC; MAE also RMSE)."""
    outputs = np.asarray(outputs)
    if task == "classifier":
        from pipeline.core.stats import wilson

        right = int(np.sum(outputs.argmax(-1) == y))
        return {"metric": "accuracy", "value": right / len(y), "ci95": list(wilson(right, len(y)))}
    if task == "regression":
        error = _rows(outputs) - _rows(y)
        absolute, squared = np.abs(error).mean(axis=1), (error ** 2).mean(axis=1)
        low, high = mean_interval(squared)
        return {"metric": "mae", "value": float(absolute.mean()), "ci95": mean_interval(absolute),
                "rmse": float(np.sqrt(squared.mean())),
                "rmse_ci95": [float(np.sqrt(max(low, 0.0))), float(np.sqrt(max(high, 0.0)))]}
    if not labelled(y):
        scores = anomaly_scores(outputs, x)
        return {"metric": "reconstruction_mse", "value": float(scores.mean()), "ci95": mean_interval(scores)}
    scores, labels = _auc_inputs(outputs, x, y, groups)
    check_scores(scores)
    aucs, covariance = delong(scores, labels)
    return {"metric": "auc", "value": float(aucs[0]), "ci95": auc_interval(aucs[0], covariance[0, 0]),
            "partial_auc": partial_auc(scores, labels), "partial_auc_max_fpr": PARTIAL_AUC_MAX_FPR,
            "scored": "per group" if groups is not None else "per sample", "scored_count": int(len(scores))}


def compare(task: str, reference, output, x, y, groups=None,
            thresholds: tuple[float, float] | None = None) -> dict[str, Any]:
    """An artifact's outputs against its Keras source's on the same test samples: both
    metrics, the drop (positive = worse: AUC lost, relative MAE or MSE rise) with a paired 95%
    interval, and where ``thresholds`` (the source's, the artifact's) decide anomalies, how
    often the two decisions agree."""
    keras, found = evaluate(task, reference, x, y, groups), evaluate(task, output, x, y, groups)
    row: dict[str, Any] = {"metric": found["metric"], "metric_value": found["value"],
                           "keras_metric_value": keras["value"], "metric_ci95": found["ci95"],
                           "keras_metric_ci95": keras["ci95"]}
    for extra in ("partial_auc", "rmse"):
        if extra in found:
            row[extra], row[f"keras_{extra}"] = found[extra], keras[extra]
    if found["metric"] == "auc":
        pair_scores, labels = zip(*(_auc_inputs(o, x, y, groups) for o in (reference, output)))
        aucs, cov = delong(np.stack(pair_scores), labels[0])
        drop = float(aucs[0] - aucs[1])
        half = Z95 * float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
        row.update(metric_drop=drop, metric_drop_ci95=[drop - half, drop + half], metric_drop_method="DeLong, paired")
    else:
        per_sample = [sample_errors(task, o, x, y) for o in (reference, output)]
        base = max(float(per_sample[0].mean()), 1e-12)
        low, high = mean_interval(per_sample[1] - per_sample[0])
        row.update(metric_drop=float((per_sample[1].mean() - per_sample[0].mean()) / base),
                   metric_drop_ci95=[low / base, high / base], metric_drop_method="relative rise, paired")
    if task == "reconstruction" and thresholds is not None:
        from pipeline.core.stats import wilson

        same = decide(anomaly_scores(reference, x), thresholds[0]) == decide(anomaly_scores(output, x), thresholds[1])
        row.update(decision_agreement=float(same.mean()), threshold=thresholds[1], keras_threshold=thresholds[0],
                   decision_agreement_ci95=list(wilson(int(same.sum()), len(same))))
    return row


def _rows(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def threshold_for(val_outputs, x_val) -> dict[str, Any]:
    """The anomaly threshold a device applies: ``THRESHOLD_QUANTILE`` of the validation split's
    scores (normal samples only: an autoencoder trains and validates on normal data)."""
    scores = anomaly_scores(val_outputs, x_val)
    if not len(scores):
        raise TaskError("the validation split is empty: an anomaly threshold is chosen on it (--val-fraction > 0)")
    return {"threshold": float(np.quantile(scores, THRESHOLD_QUANTILE)), "score": "mean squared reconstruction error",
            "rule": f"anomaly when the score is above the {THRESHOLD_QUANTILE:.0%} quantile of the validation "
                    f"split's scores ({len(scores)} normal samples)"}


def roc_points(outputs, x, y, groups=None, points: int = 200) -> dict[str, list[float]]:
    """The ROC curve of an autoencoder's scores, thinned to about ``points`` points for a plot."""
    scores, labels = _auc_inputs(outputs, x, y, groups)
    fpr, tpr, _ = roc_curve(scores, labels)
    keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, min(points, len(fpr))).astype(int), len(fpr) - 1])
    return {"fpr": [round(float(v), 5) for v in fpr[keep]], "tpr": [round(float(v), 5) for v in tpr[keep]]}


def describe_metric(scored: dict) -> str:
    """``test AUC 0.9907 [0.9731, 1.0000]``: a task's test metric (``evaluate``'s) with its interval."""
    low, high = scored["ci95"]
    return f"test {scored['metric'].upper()} {scored['value']:.4f} [{low + 0.0:.4f}, {high + 0.0:.4f}]"


def test_metric_of(model, dataset, task: str) -> dict[str, Any]:
    """A Keras model's task metric on a data set's test split, with its interval."""
    x_test, y_test = dataset.split("test")
    return evaluate(task, model.predict(x_test, batch_size=256, verbose=0), x_test, y_test, dataset.groups_test)
