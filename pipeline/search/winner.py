"""Choosing the winner by evidence (trials within the validation noise re-scored by k-fold
cross-validation), retraining it as a run, and the baseline it is compared with on test."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.core.fsutil import read_json, remove_file, write_bytes, write_json
from pipeline.search.space import SearchOptions
from pipeline.search.trials import _fit_candidate, _log_losses, _train_candidate

log = logging.getLogger("pipeline")


# Near-tied trials are re-scored by this many folds over train+validation (SearchSection.rescore).
RESCORE_FOLDS = 3


def _finish_winner(best: dict, options: SearchOptions, data, out: Path) -> dict:
    """The winner retrained with its hyperparameters for twice the trial epochs on the training
    and validation splits (selection is done: the search ranks on short trainings), as a
    normal run directory (test accuracy: the test split's one use), quantized like any run."""
    from pipeline.config.stages import QuantizeOptions
    from pipeline.core.modelio import save_model
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.import_model import import_model

    final = save_model(_train_candidate(best["hyperparameters"], options, data, 2 * options.epochs,
                                        with_val=True), out / "winner.keras")
    from pipeline.search.space import task_of

    run_dir, metrics = import_model(final, dataset=options.dataset, seed=options.seed,
                                    out=out / "best", runs_root=out, task=task_of(options))
    mode = best["hyperparameters"]["quantization"]
    quantize(run_dir, QuantizeOptions(modes=[mode], recover=False))
    artifact = run_dir / f"model_{mode}.tflite"
    return {"trial": best["trial"], "run_dir": str(run_dir), "artifact": str(artifact),
            "hyperparameters": best["hyperparameters"], "final_epochs": 2 * options.epochs,
            "val_accuracy": best["metrics"].get("val_accuracy"), "test_accuracy": metrics["test_accuracy"],
            **({"val_error": best["metrics"]["val_error"], "test_metric": metrics["test_metric"]}
               if "val_error" in best["metrics"] else {}),
            "size_kb": artifact.stat().st_size / 1024}


def _choose(feasible: list[dict], options: SearchOptions, data) -> tuple[dict, dict]:
    """The winner among the fitting trials, and how it was chosen.

    The most accurate on validation, unless other trials are within its noise (the interval
    of their difference reaches zero: on digits' 144 validation images that is about ±4
    points): then the best ``options.rescore`` of those are re-scored by ``RESCORE_FOLDS``-fold
    cross-validation over train+validation (every sample held out once, ten times the
    validation split) and the most accurate there wins. Ties on accuracy go to the lower log
    loss, a finer reading of the same samples."""
    from pipeline.core.stats import difference_ci95, paired_drop, wilson, within_noise

    if "val_error" in feasible[0]["metrics"]:
        return _choose_by_error(feasible, data)
    ranked = sorted(feasible, key=lambda t: (-t["metrics"]["val_accuracy"], t["metrics"]["val_log_loss"]))
    n_val = len(data.split("val")[1])
    top = ranked[0]["metrics"]["val_accuracy"]
    near = [t for t in ranked if within_noise(top, t["metrics"]["val_accuracy"], n_val)]
    record = {"validation_samples": n_val, "within_noise": [t["trial"] for t in near], "folds": 0,
              "rescored": [], "winner": ranked[0]["trial"]}
    chosen = near[:options.rescore]
    if len(chosen) < 2:
        record["reason"] = ("re-scoring is off (--rescore 0)" if len(near) > 1 and options.rescore < 2
                            else "no other fitting trial is within the validation noise of the best")
        if len(ranked) > 1:  # the margin over the runner-up on validation (independent samples here)
            second = ranked[1]["metrics"]["val_accuracy"]
            record["margin"] = {"over": ranked[1]["trial"], "difference": top - second, "on": "validation",
                                "ci95": difference_ci95(top, n_val, second, n_val)}
        return ranked[0], record
    x_train, y_train = data.split("train")
    x_val, y_val = data.split("val")
    x, y = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    folds = np.array_split(np.random.default_rng(options.seed).permutation(len(y)), RESCORE_FOLDS)
    scored = {t["trial"]: _cross_validate(t, options, data, x, y, folds) for t in chosen}
    order = sorted(chosen, key=lambda t: (-scored[t["trial"]]["correct"].mean(), scored[t["trial"]]["log_loss"]))
    for t in chosen:
        correct = scored[t["trial"]]["correct"]
        record["rescored"].append({
            "trial": t["trial"], "val_accuracy": t["metrics"]["val_accuracy"],
            "cv_accuracy": float(correct.mean()), "cv_accuracy_ci95": list(wilson(int(correct.sum()), len(correct))),
            "cv_log_loss": scored[t["trial"]]["log_loss"]})
    winner, runner_up = order[0], order[1]
    margin = paired_drop(scored[winner["trial"]]["correct"], scored[runner_up["trial"]]["correct"])
    record.update(folds=RESCORE_FOLDS, samples=len(y), winner=winner["trial"],
                  margin={"over": runner_up["trial"], "difference": margin["drop"], "ci95": margin["ci95"],
                          "on": f"{RESCORE_FOLDS}-fold cross-validation", "method": margin["method"]})
    if winner["trial"] != ranked[0]["trial"]:
        log.info("re-scoring: trial %s wins over trial %s (validation's best)", winner["trial"], ranked[0]["trial"])
    return winner, record


def _choose_by_error(feasible: list[dict], data) -> tuple[dict, dict]:
    """An autoencoder's or a regression's winner: the lowest validation error of its int8
    artifact (re-scoring by cross-validation compares right answers: a classifier's)."""
    ranked = sorted(feasible, key=lambda t: t["metrics"]["val_error"])
    record = {"validation_samples": int(data.size("val")), "within_noise": [], "folds": 0, "rescored": [],
              "winner": ranked[0]["trial"], "reason": "lowest validation error of the int8 artifact"}
    if len(ranked) > 1:
        record["margin"] = {"over": ranked[1]["trial"], "on": "validation", "error_ratio":
                            ranked[0]["metrics"]["val_error"] / max(ranked[1]["metrics"]["val_error"], 1e-12)}
    return ranked[0], record


def _cross_validate(trial: dict, options: SearchOptions, data, x, y, folds) -> dict:
    """The trial's hyperparameters trained on all folds but one, quantized, and scored on the
    held-out one, for each fold: whether each sample was right, and the mean log loss. A
    fold's result is kept in the trial's directory (a killed search does not redo it) and
    read back only if it was made for this very split."""
    from edge_runtime import load
    from pipeline.core.recipes import recipe_for
    from pipeline.formats.tflite import to_tflite

    values, trial_dir = trial["hyperparameters"], Path(trial["dir"])
    correct, losses = np.zeros(len(y), dtype=bool), np.zeros(len(y))
    for k, held in enumerate(folds):
        path = trial_dir / f"rescore_fold{k}.json"
        key = {"hyperparameters": values, "fold": k, "folds": len(folds), "seed": options.seed,
               "samples": len(y), "epochs": options.epochs, "schedule": recipe_for(options.model)["lr_schedule"]}
        cached = _cached_fold(path, key, len(held))
        if cached is None:
            rows = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != k]))
            model = _fit_candidate(values, options, data, x[rows], y[rows], options.epochs)
            artifact = trial_dir / f"rescore_fold{k}.tflite"
            write_bytes(artifact, to_tflite(model, values["quantization"], calibration=x[rows][:300]))
            probabilities = load(artifact).predict(x[held])
            remove_file(artifact)
            cached = {"correct": (probabilities.argmax(-1) == y[held]).astype(int).tolist(),
                      "log_loss": _log_losses(probabilities, y[held]).tolist()}
            write_json(path, {**key, **cached})
        correct[held] = np.asarray(cached["correct"], dtype=bool)
        losses[held] = cached["log_loss"]
    return {"correct": correct, "log_loss": float(losses.mean())}


def _cached_fold(path: Path, key: dict, size: int) -> dict | None:
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in key.items()):
        return None
    correct, losses = recorded.get("correct"), recorded.get("log_loss")
    if not (isinstance(correct, list) and isinstance(losses, list) and len(correct) == len(losses) == size):
        return None
    if not all(c in (0, 1) and not isinstance(c, bool) for c in correct) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1e3 for v in losses):
        return None
    return {"correct": correct, "log_loss": [float(v) for v in losses]}


def _int8_test_comparison(artifacts: list[Path], data, task: str = "classifier") -> dict:
    """The baseline's and the winner's shipped artifacts on the test split, side by side: each
    accuracy (an autoencoder's AUC, a regression's MAE) with its interval and the winner's
    difference, paired (same samples)."""
    from edge_runtime import load
    from pipeline.core.stats import paired_drop, wilson

    x_test, y_test = data.split("test")
    if task != "classifier":
        from pipeline.core.tasks import compare

        found = compare(task, *(load(a).predict(x_test) for a in artifacts), x_test, y_test, data.groups_test)
        low, high = found["metric_drop_ci95"]
        return {"samples": int(len(y_test)), "metric": found["metric"],
                "baseline": {"value": found["keras_metric_value"], "ci95": found["keras_metric_ci95"]},
                "best": {"value": found["metric_value"], "ci95": found["metric_ci95"]},
                # the baseline's figure minus the best's, as a drop: AUC lost, or relative error rise
                "difference": -found["metric_drop"], "difference_ci95": [-high, -low],
                "method": found["metric_drop_method"]}
    correct = [load(a).predict(x_test).argmax(-1) == y_test for a in artifacts]
    accuracy = [{"accuracy": float(c.mean()), "ci95": list(wilson(int(c.sum()), len(c)))} for c in correct]
    paired = paired_drop(correct[0], correct[1])  # baseline − winner
    return {"samples": int(len(y_test)), "baseline": accuracy[0], "best": accuracy[1],
            "difference": -paired["drop"], "difference_ci95": [-paired["ci95"][1], -paired["ci95"][0]],
            "method": paired["method"]}


def _baseline(options: SearchOptions, out: Path) -> dict:
    """The zoo model as it comes (its own recipe), trained and quantized here."""
    from pipeline.config.stages import QuantizeOptions, TrainOptions
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.train import train

    run_dir = out / "baseline"
    artifact = run_dir / "model_int8.tflite"
    recorded = _recorded(run_dir) if artifact.is_file() else None
    if recorded is None:  # not trained yet, or its record is damaged: train it (again)
        result = train(run_dir, TrainOptions(model=options.model, dataset=options.dataset, seed=options.seed),
                       runs_root=out, verbose=0)
        quantize(run_dir, QuantizeOptions(modes=["int8"], recover=False))
        recorded = {"test_accuracy": result.metrics["test_accuracy"],
                    **({"test_metric": result.metrics["test_metric"]} if "test_metric" in result.metrics else {})}
    return {"run_dir": str(run_dir), **recorded, "size_kb": artifact.stat().st_size / 1024}


def _recorded(run_dir: Path) -> dict | None:
    """The baseline run's recorded test figure (a classifier's accuracy, another task's metric
    with its interval), or None where the record is missing or damaged."""
    from pipeline.core import schemas

    try:
        info = read_json(run_dir / "train.json")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    scored = info.get("test_metric")
    if scored is not None:
        return None if schemas.problems(scored, schemas.TASK_METRIC) else {"test_accuracy": None, "test_metric": scored}
    value = info.get("test_accuracy")
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    return {"test_accuracy": float(value)} if valid else None
