"""The KerasTuner side: the oracle's tuner, one trial (train, prune, quantize, time, score its
int8 artifact on validation), and what a finished trial left in its folder."""
from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import numpy as np

from edge_runtime.errors import CodedError
from pipeline.core.fsutil import append_line, make_dirs, read_json, write_bytes, write_json
from pipeline.search.screening import NEW_ARCHITECTURE_DRAWS, SCREEN_DRAWS, Screen
from pipeline.search.space import SearchOptions, _build, _pruned, architecture, task_of
from pipeline.search.timer import PLAUSIBLE_P50_MS, Timer, _budget_metrics, _over_budget

log = logging.getLogger("pipeline")


@functools.cache
def _stop_search():
    from keras_tuner.errors import FatalError

    class StopSearch(FatalError):
        """A pipeline error inside a trial: KerasTuner stops (it retries any other exception)."""

        def __init__(self, error: Exception):
            super().__init__(str(error))
            self.error = error

    return StopSearch


def _tuner(options: SearchOptions, data, out: Path, timer: Timer):
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    from pipeline.compat.keras_tuner import (
        atomic_state_writes,
        prompt_chief_exit,
        random_values,
        retry_queue,
        seed_oracle,
        values_hash,
    )

    atomic_state_writes()
    prompt_chief_exit()
    screen = Screen(options, data, timer, out)

    class ScreenedOracle(keras_tuner.oracles.RandomSearchOracle):
        """Random candidates, but only those whose untrained twin fits the budgets."""

        def populate_space(self, trial_id):
            """In this order: a new architecture whose untrained twin is within the budgets;
            new training choices for a tried one that is; a new architecture whose twin is
            within ``SCREEN_TOLERANCE`` over them (timed once, its trained artifact may still
            fit); new training choices for such a one. Measured on digits at a third of the
            seed CNN's p50: every trial whose twin was over the budget was over it trained."""
            tried = {architecture(options.model, t.hyperparameters.values) for t in self.trials.values()}
            rejected, found = set(), {}
            for draw in range(SCREEN_DRAWS):
                values = random_values(self)
                if values is None:
                    break
                digest = values_hash(self, values)
                if digest in rejected:
                    continue
                if not screen.fits(values):
                    rejected.add(digest)
                    continue
                new = architecture(options.model, values) not in tried
                rank = (0 if new else 1) if screen.within_budgets(values) else (2 if new else 3)
                if rank == 0:
                    return {"status": TrialStatus.RUNNING, "values": values}
                found.setdefault(rank, values)
                if draw >= NEW_ARCHITECTURE_DRAWS and found:
                    break
            chosen = found[min(found)] if found else None
            if chosen:
                return {"status": TrialStatus.RUNNING, "values": chosen}
            return {"status": TrialStatus.STOPPED, "values": None}  # nothing left that fits

        def reload(self):
            super().reload()
            # A kill between a new trial's own file and the oracle's leaves a RUNNING trial the
            # oracle does not know is running: run it again like the interrupted ones.
            queue = retry_queue(self)
            for trial_id, trial in sorted(self.trials.items()):
                if trial.status == TrialStatus.RUNNING and trial_id not in queue:
                    queue.append(trial_id)

    class EdgeTuner(keras_tuner.Tuner):
        """Trials that end in a measured int8 artifact (see run_trial)."""

        def run_trial(self, trial, *args, **kwargs):
            if options.time_limit_s and time.perf_counter() - self.started > options.time_limit_s:
                self.oracle.max_trials = len(self.oracle.trials)  # no new trials after this one
            try:
                return _run_trial(trial.hyperparameters, options, data, Path(self.get_trial_dir(trial.trial_id)),
                                  timer, screen.p50_ms(trial.hyperparameters.values))
            except CodedError as exc:  # the user's to fix (a device that is down): not a failed trial
                raise _stop_search()(exc) from None

        def on_search_begin(self):
            self.started = time.perf_counter()
            super().on_search_begin()

        def is_chief(self) -> bool:
            return os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief"

    space = keras_tuner.HyperParameters()
    for name, values in options.hyperparameters().items():
        space.Choice(name, values)
    oracle = ScreenedOracle(objective=keras_tuner.Objective("score", "max"), max_trials=options.trials,
                            hyperparameters=space, seed=options.seed,
                            max_consecutive_failed_trials=options.trials)
    seed_oracle(oracle, options.seed)
    return EdgeTuner(oracle=oracle, directory=str(out), project_name="tuner", overwrite=False), screen


def _train_candidate(values: dict, options: SearchOptions, data, epochs: int, *, with_val: bool = False):
    """A model with these hyperparameters, trained (and pruned, fine-tuned) from scratch; on
    the training split, or with the validation split too once it has done its job."""
    x_train, y_train = data.split("train")
    if with_val:
        x_val, y_val = data.split("val")
        x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    return _fit_candidate(values, options, data, x_train, y_train, epochs)


def _fit_candidate(values: dict, options: SearchOptions, data, x_train, y_train, epochs: int):
    from pipeline.core.backend import import_keras, seed_everything
    from pipeline.core.batchnorm import recalibrate_batchnorm
    from pipeline.core.recipes import compile_for_task, make_optimizer, recipe_for, scheduled_rate
    from pipeline.core.tasks import target

    keras = import_keras()
    keras.backend.clear_session()
    seed_everything(options.seed)
    model = _build(options.model, data, values)
    task = task_of(options)
    y_train = target(task, x_train, y_train)  # an autoencoder learns to output its input
    # the learning-rate schedule of the baseline's recipe: candidates and baseline train alike
    rate = scheduled_rate(keras, values["learning_rate"], recipe_for(options.model)["lr_schedule"],
                          len(y_train), values["batch_size"], epochs)
    compile_for_task(model, task, make_optimizer(keras, values["optimizer"], rate))
    model.fit(x_train, y_train, batch_size=values["batch_size"], epochs=epochs, verbose=0, shuffle=True)
    if values["sparsity"]:
        model = _pruned(model, values["sparsity"])
        compile_for_task(model, task, make_optimizer(keras, values["optimizer"], values["learning_rate"] / 3))
        model.fit(x_train, y_train, batch_size=values["batch_size"], epochs=2, verbose=0, shuffle=True)
    recalibrate_batchnorm(model, x_train, seed=options.seed)
    return model


def _run_trial(hp, options: SearchOptions, data, trial_dir: Path, timer: Timer,
               untrained_p50_ms: float | None = None) -> dict:
    """Train, prune, quantize and measure one candidate; its files stay in ``trial_dir``."""
    from edge_runtime import load
    from pipeline.core.modelio import save_model
    from pipeline.formats.tflite import to_tflite

    values = hp.values
    finished = _finished_measurement(trial_dir, values)
    if finished is not None:  # measured before a kill stopped KerasTuner from recording it
        log.info("trial %s: measured before the search was stopped; not run again", trial_dir.name)
        _log_trial_run(trial_dir, once=True)
        return finished
    (x_train, _), (x_val, y_val) = data.split("train"), data.split("val")
    model = _train_candidate(values, options, data, options.epochs)
    make_dirs(trial_dir)
    save_model(model, trial_dir / "model.keras")
    artifact = trial_dir / f"model_{values['quantization']}.tflite"
    write_bytes(artifact, to_tflite(model, values["quantization"], calibration=x_train[:300]))
    outputs = load(artifact).predict(x_val)
    task = task_of(options)
    if task == "classifier":
        metrics = {"val_accuracy": float(np.mean(outputs.argmax(-1) == y_val)),
                   "val_log_loss": float(np.mean(_log_losses(outputs, y_val)))}
    else:  # the int8 artifact's mean reconstruction error (normal samples) or absolute error
        from edge_runtime.tasks import sample_errors

        metrics = {"val_error": float(np.mean(sample_errors(task, outputs, x_val, y_val)))}
    metrics.update(_budget_metrics(artifact, options, timer, untrained_p50_ms))
    measured = metrics.pop("p50_ms_measured")
    over = _over_budget(metrics, options)
    figure = metrics["val_accuracy"] if task == "classifier" else -metrics["val_error"]
    # over a budget: below every trial that fits (an accuracy is at most 1, an error at least 0)
    scale = 1.0 if task == "classifier" else 1.0 + metrics["val_error"]
    penalty = (1.0 + sum(over.values())) * scale if over else 0.0
    metrics.update(feasible=float(not over), score=figure - penalty)
    write_json(trial_dir / "measurement.json", {"hyperparameters": values, "metrics": metrics,
                                                "p50_ms_measured": measured, "over_budget": over,
                                                "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "chief")})
    _log_trial_run(trial_dir)
    log.info("trial %s: validation %s, p50 %.4f ms, %.1f KiB%s", trial_dir.name.removeprefix("trial_"),
             f"accuracy {metrics['val_accuracy']:.2%}" if task == "classifier" else f"error {metrics['val_error']:.5g}",
             metrics["p50_ms"], metrics["size_kb"], ", over budget" if over else "")
    return metrics


def _log_trial_run(trial_dir: Path, once: bool = False) -> None:
    """Append the trial to ``trials.log`` (every run of a trial, so a rerun shows); with
    ``once``, only if a kill came between its measurement and this line."""
    record = trial_dir.parent / "trials.log"
    if once and record.is_file():
        if trial_dir.name in record.read_text(encoding="utf-8", errors="replace").split()[0::2]:
            return
    append_line(record, f"{trial_dir.name} {os.getpid()}")


def _finished_measurement(trial_dir: Path, values: dict) -> dict | None:
    """A trial's recorded metrics, if it finished measuring with these very hyperparameters
    (the trial directory is untrusted: anything else is measured again)."""
    path = trial_dir / "measurement.json"
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("hyperparameters") != values:
        return None
    metrics = recorded.get("metrics")
    plausible = PLAUSIBLE_ERROR if isinstance(metrics, dict) and "val_error" in metrics else PLAUSIBLE
    if not isinstance(metrics, dict) or not all(
            isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool)
            and np.isfinite(metrics[k]) and low <= metrics[k] <= high for k, (low, high) in plausible.items()):
        return None
    if metrics["p50_ms"] == 0 or metrics["size_kb"] == 0 or metrics["feasible"] not in (0, 1):
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# What a finished trial's measurement can hold (a record outside these ranges is measured again:
# a planted p50 of 1e300 ms or an accuracy of 7 would otherwise decide the search).
PLAUSIBLE = {"val_accuracy": (0.0, 1.0), "val_log_loss": (0.0, np.inf), "p50_ms": (0.0, PLAUSIBLE_P50_MS),
             "size_kb": (0.0, np.inf), "feasible": (0.0, 1.0), "score": (-np.inf, np.inf)}
# ... and an autoencoder's or a regression's (an error instead of accuracy and log loss)
PLAUSIBLE_ERROR = {"val_error": (0.0, np.inf), **{k: v for k, v in PLAUSIBLE.items() if not k.startswith("val_")}}


def _trial_table(tuner) -> list[dict]:
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        rows.append({"trial": trial_id, "status": str(trial.status), "hyperparameters": trial.hyperparameters.values,
                     "metrics": metrics, "dir": str(Path(tuner.get_trial_dir(trial_id)))})
    return rows


def _log_losses(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each sample's log loss: −log of the probability given to its true class."""
    return -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0))
