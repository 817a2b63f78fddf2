"""``pipeline search``: the most accurate model within a latency/size/RAM budget, measured.

Each trial (a KerasTuner trial, so the search resumes from its directory and can run as a
chief with workers) trains a zoo model variant briefly, optionally prunes it, quantizes it
(int8 by default), times it with the same code as ``pipeline bench`` and scores its **int8
artifact** on the validation split. The objective is that accuracy when the artifact fits
the budgets, and below every fitting trial when it does not. The test split is used once:
for the winner (made a normal run directory that later stages continue from) and for the
zoo model's default, trained and measured in the same search as the baseline.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UsageError
from pipeline.fsutil import read_json, write_json

log = logging.getLogger("pipeline")

# Per zoo model: builder options to explore (strings where the builder takes a tuple).
SPACES: dict[str, dict[str, list]] = {
    "mnist_cnn": {"filters": ["8", "8-16", "16-32", "32-64"], "dense": [32, 64], "stem_pool": [1, 2]},
    "mlp": {"hidden": ["32", "64", "128-64"]},
}
# Training and deployment choices every model shares.
COMMON_SPACE: dict[str, list] = {
    "learning_rate": [1e-3, 3e-3], "optimizer": ["adam", "rmsprop"], "batch_size": [32, 64],
    "sparsity": [0.0, 0.5], "quantization": ["int8"],
}
MARKER = "search.json"


@dataclass
class SearchOptions:
    model: str = "mnist_cnn"
    dataset: str = "digits"
    trials: int = 12
    time_limit_s: float | None = None
    epochs: int = 15                  # per trial: the zoo recipe's length on digits
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_ram_kb: float | None = None
    seed: int = 0
    bench_seconds: float = 1.0      # per trial: microsecond latencies need the longer timing

    def validate(self) -> None:
        from pipeline.limits import check

        if self.model not in SPACES:
            from pipeline.errors import unknown_name

            raise unknown_name("searchable model", self.model, SPACES)
        check("epochs", self.epochs)
        check("seed", self.seed)
        check("max_latency_ms", self.max_latency_ms, label="--max-latency-ms")
        check("max_size_kb", self.max_size_kb, label="--max-size-kb")
        check("max_ram_kb", self.max_ram_kb, label="--max-ram-kb")
        if not 1 <= self.trials <= 10_000:
            raise UsageError(f"--trials must lie in [1, 10000], got {self.trials}")
        if self.time_limit_s is not None and not 0 < self.time_limit_s <= 7 * 24 * 3600:
            raise UsageError(f"--time-limit must lie in (0, 604800] seconds, got {self.time_limit_s}")


def search(options: SearchOptions, out: Path) -> dict:
    """Run (or resume) the search in ``out``; return what ``search.json`` holds."""
    options.validate()
    out = _search_dir(Path(out), options)
    from pipeline.backend import import_keras
    from pipeline.data import load_dataset

    import_keras()
    data = load_dataset(options.dataset, seed=options.seed)
    tuner = _tuner(options, data, out)
    started = time.perf_counter()
    tuner.search(verbose=0)  # one line a trial instead (run_trial)
    if not tuner.is_chief():
        return {"worker": True}
    trials = _trial_table(tuner)
    summary = {"options": asdict(options), "search_seconds": round(time.perf_counter() - started, 1),
               "trials": trials}
    feasible = [t for t in trials if t["status"] == "COMPLETED" and t["metrics"].get("feasible")]
    if feasible:
        # the most accurate; on a tie (one validation image is 0.7 points on digits) the fastest
        best = max(feasible, key=lambda t: (t["metrics"]["val_accuracy"], -t["metrics"]["p50_ms"]))
        summary["best"] = _finish_winner(best, options, data, out)
    summary["baseline"] = _baseline(options, out)
    if summary.get("best"):
        summary["comparison"] = {
            "p50_ratio": summary["best"]["p50_ms"] / summary["baseline"]["p50_ms"],
            "test_accuracy_difference": summary["best"]["test_accuracy"] - summary["baseline"]["test_accuracy"]}
    write_json(out / MARKER, summary)
    _report(summary, out)
    return summary


def _search_dir(out: Path, options: SearchOptions) -> Path:
    """A new directory, or one this search started (the same options: it resumes)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    state = out / "search_options.json"
    if out.is_dir() and any(out.iterdir()):
        if not state.is_file():
            raise UsageError(f"{out} is not empty and holds no search: choose a new --out")
        try:
            before = read_json(state)
        except (ValueError, OSError):
            raise UsageError(f"{state} is unreadable: choose a new --out") from None
        changed = sorted(k for k, v in asdict(options).items() if k != "trials" and before.get(k) != v)
        if changed:
            raise UsageError(f"{out} holds a search with other options ({', '.join(changed)}): "
                             f"resume it with the same ones, or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(state, asdict(options))
    return out


def _tuner(options: SearchOptions, data, out: Path):
    import keras_tuner

    class EdgeTuner(keras_tuner.RandomSearch):
        """A random search whose trials end in a measured int8 artifact (see run_trial)."""

        def run_trial(self, trial, *args, **kwargs):
            if options.time_limit_s and time.perf_counter() - self.started > options.time_limit_s:
                self.oracle.max_trials = len(self.oracle.trials)  # no new trials after this one
            return _run_trial(trial.hyperparameters, options, data, Path(self.get_trial_dir(trial.trial_id)))

        def on_search_begin(self):
            self.started = time.perf_counter()
            super().on_search_begin()

        def is_chief(self) -> bool:
            return os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief"

    space = keras_tuner.HyperParameters()
    for name, values in {**SPACES[options.model], **COMMON_SPACE}.items():
        space.Choice(name, values)
    return EdgeTuner(objective=keras_tuner.Objective("score", "max"), max_trials=options.trials,
                     hyperparameters=space, seed=options.seed, directory=str(out), project_name="tuner",
                     overwrite=False, max_consecutive_failed_trials=options.trials)


def _builder_options(model: str, values: dict) -> dict:
    if model == "mnist_cnn":
        return {"filters": tuple(int(v) for v in values["filters"].split("-")), "dense": values["dense"],
                "stem_pool": values.get("stem_pool", 1)}
    return {"hidden": tuple(int(v) for v in values["hidden"].split("-"))}


def _train_candidate(values: dict, options: SearchOptions, data, epochs: int, *, with_val: bool = False):
    """A model with these hyperparameters, trained (and pruned, fine-tuned) from scratch; on
    the training split, or with the validation split too once it has done its job."""
    from pipeline.backend import import_keras, seed_everything
    from pipeline.batchnorm import recalibrate_batchnorm
    from pipeline.train import compile_for_task, zoo_spec

    keras = import_keras()
    keras.backend.clear_session()
    seed_everything(options.seed)
    x_train, y_train = data.split("train")
    if with_val:
        x_val, y_val = data.split("val")
        x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    model = zoo_spec(options.model).build(tuple(data.input_shape), int(data.num_classes),
                                          **_builder_options(options.model, values))
    optimizer = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[values["optimizer"]]
    compile_for_task(model, "classifier", optimizer(values["learning_rate"]))
    model.fit(x_train, y_train, batch_size=values["batch_size"], epochs=epochs, verbose=0, shuffle=True)
    if values["sparsity"]:
        from pipeline.structured import shrink

        try:
            model = shrink(model, values["sparsity"])
        except UsageError:
            pass  # nothing prunable: the candidate goes on unpruned
        compile_for_task(model, "classifier", optimizer(values["learning_rate"] / 3))
        model.fit(x_train, y_train, batch_size=values["batch_size"], epochs=2, verbose=0, shuffle=True)
    recalibrate_batchnorm(model, x_train, seed=options.seed)
    return model


def _run_trial(hp, options: SearchOptions, data, trial_dir: Path) -> dict:
    """Train, prune, quantize and measure one candidate; its files stay in ``trial_dir``."""
    from edge_runtime import load
    from edge_runtime.bench import bench_file
    from pipeline.tflite import to_tflite

    values = hp.values
    (x_train, _), (x_val, y_val) = data.split("train"), data.split("val")
    model = _train_candidate(values, options, data, options.epochs)
    trial_dir.mkdir(parents=True, exist_ok=True)
    model.save(trial_dir / "model.keras")
    artifact = trial_dir / f"model_{values['quantization']}.tflite"
    artifact.write_bytes(to_tflite(model, values["quantization"], calibration=x_train[:300]))
    val_accuracy = float(np.mean(load(artifact).predict(x_val).argmax(-1) == y_val))
    (timing,) = bench_file(artifact, threads=[1], runs=50, warmup=10, min_seconds=options.bench_seconds)
    metrics = {"val_accuracy": val_accuracy, "p50_ms": timing["p50_ms"],
               "size_kb": artifact.stat().st_size / 1024}
    if options.max_ram_kb is not None:
        from pipeline.micro import run_micro

        metrics["arena_kb"] = run_micro(artifact).arena_bytes / 1024
    metrics.update(_score(metrics, options))
    write_json(trial_dir / "measurement.json", {"hyperparameters": values, "metrics": metrics,
                                          "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "chief")})
    with open(trial_dir.parent / "trials.log", "a", encoding="utf-8") as record:  # every run, appended
        record.write(f"{trial_dir.name} {os.getpid()}\n")
    log.info("trial %s: validation accuracy %.2f%%, p50 %.3f ms, %.1f KiB%s", trial_dir.name.removeprefix("trial_"),
             val_accuracy * 100, metrics["p50_ms"], metrics["size_kb"], "" if metrics["feasible"] else ", over budget")
    return metrics


def _score(metrics: dict, options: SearchOptions) -> dict:
    """Validation accuracy when every budget holds; otherwise below every fitting trial, the
    further over budget the lower."""
    over = 0.0
    for value, budget in ((metrics["p50_ms"], options.max_latency_ms), (metrics["size_kb"], options.max_size_kb),
                          (metrics.get("arena_kb"), options.max_ram_kb)):
        if budget is not None and value > budget:
            over += value / budget - 1.0
    return {"feasible": float(over == 0.0), "score": metrics["val_accuracy"] - (1.0 + over if over else 0.0)}


def _trial_table(tuner) -> list[dict]:
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        rows.append({"trial": trial_id, "status": str(trial.status), "hyperparameters": trial.hyperparameters.values,
                     "metrics": metrics, "dir": str(Path(tuner.get_trial_dir(trial_id)))})
    return rows


def _finish_winner(best: dict, options: SearchOptions, data, out: Path) -> dict:
    """The winner retrained with its hyperparameters for twice the trial epochs on the training
    and validation splits (selection is done: the search ranks on short trainings), as a
    normal run directory (test accuracy: the test split's one use), with its int8 artifact
    measured again like any run's."""
    from edge_runtime.bench import bench_file
    from pipeline.import_model import import_model
    from pipeline.modelio import save_model
    from pipeline.quantize import QuantizeOptions, quantize

    final = save_model(_train_candidate(best["hyperparameters"], options, data, 2 * options.epochs,
                                        with_val=True), out / "winner.keras")
    run_dir, metrics = import_model(final, dataset=options.dataset, seed=options.seed,
                                    out=out / "best", runs_root=out)
    mode = best["hyperparameters"]["quantization"]
    quantize(run_dir, QuantizeOptions(modes=[mode], recover=False))
    artifact = run_dir / f"model_{mode}.tflite"
    (timing,) = bench_file(artifact, threads=[1], runs=200, warmup=20, min_seconds=1.0)
    return {"trial": best["trial"], "run_dir": str(run_dir), "hyperparameters": best["hyperparameters"],
            "final_epochs": 2 * options.epochs,
            "val_accuracy": best["metrics"]["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "p50_ms": timing["p50_ms"], "size_kb": artifact.stat().st_size / 1024}


def _baseline(options: SearchOptions, out: Path) -> dict:
    """The zoo model as it comes (its own recipe), trained, quantized and timed here."""
    from edge_runtime.bench import bench_file
    from pipeline.quantize import QuantizeOptions, quantize
    from pipeline.train import TrainConfig, train

    run_dir = out / "baseline"
    if not (run_dir / "model_int8.tflite").exists():
        result = train(TrainConfig(model=options.model, dataset=options.dataset, seed=options.seed),
                       out=run_dir, runs_root=out, verbose=0)
        quantize(run_dir, QuantizeOptions(modes=["int8"], recover=False))
        test_accuracy = result.metrics["test_accuracy"]
    else:
        test_accuracy = read_json(run_dir / "train.json")["test_accuracy"]
    artifact = run_dir / "model_int8.tflite"
    (timing,) = bench_file(artifact, threads=[1], runs=200, warmup=20, min_seconds=1.0)
    return {"run_dir": str(run_dir), "test_accuracy": test_accuracy, "p50_ms": timing["p50_ms"],
            "size_kb": artifact.stat().st_size / 1024}


def _report(summary: dict, out: Path) -> None:
    """search_report.md and the accuracy-vs-latency scatter of every trial with its front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.fsutil import write_bytes
    from pipeline.report import _png, accuracy_latency_figure, pareto

    rows = [{"variant": f"trial {t['trial']}", "artifact": "model_int8", "metric": "accuracy",
             "value": t["metrics"]["val_accuracy"], "score": t["metrics"]["val_accuracy"],
             "p50_ms": t["metrics"]["p50_ms"], "size_kb": t["metrics"]["size_kb"], "recommended": False}
            for t in summary["trials"] if t["status"] == "COMPLETED"]
    best = summary.get("best")
    for row in rows:
        row["recommended"] = bool(best) and row["variant"] == f"trial {best['trial']}"
    pareto(rows)
    figure = accuracy_latency_figure(plt, rows) if rows else None
    if figure is not None:
        figure.axes[0].set_ylabel("validation accuracy (%)")
        write_bytes(out / "search_accuracy_latency.png", _png(figure))
    plt.close("all")
    lines = ["# Search report", "", "| Trial | Status | Hyperparameters | Val. accuracy | p50 ms | Size KiB | Fits |",
             "|---|---|---|---|---|---|---|"]
    for t in summary["trials"]:
        m = t["metrics"]
        lines.append(f"| {t['trial']} | {t['status']} | {json.dumps(t['hyperparameters'])} | "
                     + (f"{m['val_accuracy']:.2%} | {m['p50_ms']:.3f} | {m['size_kb']:.1f} | "
                        f"{'yes' if m.get('feasible') else 'no'} |" if m else "– | – | – | – |"))
    baseline = summary["baseline"]
    lines += ["", f"Baseline ({summary['options']['model']} as it comes): test accuracy "
              f"{baseline['test_accuracy']:.2%}, int8 p50 {baseline['p50_ms']:.3f} ms."]
    if best:
        lines.append(f"Best (trial {best['trial']}, run `{best['run_dir']}`): test accuracy "
                     f"{best['test_accuracy']:.2%}, int8 p50 {best['p50_ms']:.3f} ms "
                     f"(×{summary['comparison']['p50_ratio']:.2f} the baseline's).")
    else:
        lines.append("No trial fits the budgets.")
    lines += ["", "![accuracy vs latency](search_accuracy_latency.png)", ""]
    (out / "search_report.md").write_text("\n".join(lines), encoding="utf-8")
