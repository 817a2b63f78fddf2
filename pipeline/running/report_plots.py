"""The report's figures: accuracy against latency, artifact sizes, training curves, the
recommended artifact's confusion matrix (run on the test split as the device runs it), and
the search's trials when a search chose the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.fsutil import read_json, remove_file, write_bytes
from pipeline.device.figures import accuracy_latency_figure
from pipeline.device.figures import png_bytes as _png


def write_plots(run_dir: Path, rows, train: dict, chosen, *, searched: bool) -> dict[str, bytes]:
    """The report's figures as PNG bytes by name, written to RUN/report/ (a figure with nothing
    to show is removed, not left stale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {
        "accuracy_latency.png": _accuracy_latency_plot(plt, rows),
        "sizes.png": _size_plot(plt, rows),
        "training_curves.png": _training_plot(plt, train.get("history") or {}),
        "confusion_matrix.png": _confusion_plot(plt, run_dir, chosen),
        # an autoencoder: ROC curves and the scores of normal and anomalous samples; a
        # regression: predicted against true
        "task.png": _task_plot(plt, run_dir, chosen),
        # the search that chose this run's model (`pipeline run` with search.enabled): every trial
        "search_trials.png": (_read_if_file(run_dir / "search" / "search_accuracy_latency.png")
                              if searched else None),
    }
    for name in [name for name, data in plots.items() if data is None]:
        remove_file(run_dir / "report" / name)  # not a stale one from an earlier report
    plots = {name: data for name, data in plots.items() if data is not None}
    for name, data in plots.items():
        write_bytes(run_dir / "report" / name, data)
    plt.close("all")
    return plots


def _read_if_file(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _accuracy_latency_plot(plt, rows) -> bytes | None:
    figure = accuracy_latency_figure(plt, rows)
    return None if figure is None else _png(figure)


def _size_plot(plt, rows) -> bytes:
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    labels = [f"{r['variant']}/{r['artifact']}" for r in rows]
    axis.barh(labels, [r["size_kb"] for r in rows], color=["tab:green" if r["pareto"] else "tab:blue" for r in rows])
    axis.set_xlabel("size (KiB)")
    axis.tick_params(axis="y", labelsize=7)
    axis.set_title("Artifact sizes")
    return _png(figure)


def _training_plot(plt, history: dict) -> bytes | None:
    if not history.get("loss"):
        return None
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, title, keys in zip(axes, ("loss", "accuracy"), (("loss", "val_loss"), ("accuracy", "val_accuracy"))):
        for key in keys:
            if key in history:
                axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    return _png(figure)


def _confusion_plot(plt, run_dir: Path, chosen) -> bytes | None:
    if not chosen or chosen["metric"] != "accuracy":
        return None
    matrix = _confusion(run_dir, chosen)
    if matrix is None:
        return None
    figure, axis = plt.subplots(figsize=(5, 4.5))
    image = axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            axis.text(j, i, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > matrix.max() / 2 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"Confusion matrix: {chosen['artifact']}")
    figure.colorbar(image)
    return _png(figure)


def _confusion(run_dir: Path, chosen: dict):
    from edge_runtime import load
    from pipeline.data.context import RunContext

    variant = run_dir / chosen["dir"]
    context = RunContext(variant)
    x_test, y_test = context.dataset.split("test")
    runner = load(variant / chosen["artifact"])
    runner.use_batch(chosen.get("verified_batch") or 1)  # as verify ran it: bounded memory, same outputs
    predicted = runner.predict(x_test).argmax(-1)
    classes = context.dataset.num_classes
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (y_test, predicted), 1)
    return matrix


def _task_plot(plt, run_dir: Path, chosen) -> bytes | None:
    """The recommended artifact of an autoencoder (its ROC curve beside the Keras model's, the
    histograms of its normal and anomalous test samples' scores with its threshold) or of a
    regression (predicted against true), run on the test split as the device runs it."""
    if not chosen or chosen["metric"] not in ("auc", "mae"):
        return None
    from edge_runtime import load
    from edge_runtime.tasks import anomaly_scores
    from pipeline.core.tasks import roc_points
    from pipeline.data.context import RunContext

    variant = run_dir / chosen["dir"]
    context = RunContext(variant)
    x_test, y_test = context.dataset.split("test")
    runner = load(variant / chosen["artifact"])
    runner.use_batch(chosen.get("verified_batch") or 1)
    outputs = runner.predict(x_test)
    if chosen["metric"] == "mae":
        figure, axis = plt.subplots(figsize=(5, 4.5))
        true, predicted = np.asarray(y_test).reshape(len(y_test), -1)[:, 0], outputs.reshape(len(outputs), -1)[:, 0]
        axis.scatter(true, predicted, s=6, alpha=0.6)
        ends = [float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))]
        axis.plot(ends, ends, color="grey", linewidth=1)
        axis.set_xlabel("true")
        axis.set_ylabel("predicted")
        axis.set_title(f"{chosen['artifact']}: predicted against true (test)")
        return _png(figure)
    figure, (roc_axis, histogram) = plt.subplots(1, 2, figsize=(10, 4))
    verify = read_json(variant / "verify.json")
    keras = next(iter(verify.get("keras", {}).values()), {})
    if isinstance(keras, dict) and keras.get("roc"):
        roc_axis.plot(keras["roc"]["fpr"], keras["roc"]["tpr"], label=f"Keras (AUC {keras['value']:.4f})")
    curve = roc_points(outputs, x_test, y_test, context.dataset.groups_test)
    roc_axis.plot(curve["fpr"], curve["tpr"], label=f"{chosen['artifact']} (AUC {chosen['value']:.4f})")
    roc_axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    roc_axis.set_xlabel("false-positive rate")
    roc_axis.set_ylabel("true-positive rate")
    roc_axis.set_title("ROC (test)")
    roc_axis.legend(fontsize=8)
    scores = anomaly_scores(outputs, x_test)
    bins = np.histogram_bin_edges(scores, bins=40)
    for label, name in ((0, "normal"), (1, "anomalous")):
        histogram.hist(scores[np.asarray(y_test) == label], bins=bins, alpha=0.6, label=name)
    threshold = (runner.sidecar.get("anomaly") or {}).get("threshold")
    if threshold is not None:
        histogram.axvline(threshold, color="black", linewidth=1, label=f"threshold {threshold:.4g}")
    histogram.set_xlabel("anomaly score (mean squared reconstruction error)")
    histogram.set_title("Scores of the test samples")
    histogram.legend(fontsize=8)
    return _png(figure)
