"""The report's figures: accuracy against latency, artifact sizes, training curves, the
recommended artifact's confusion matrix (run on the test split as the device runs it), and
the search's trials when a search chose the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.fsutil import remove_file, write_bytes
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
