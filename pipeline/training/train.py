"""``pipeline train``: fit a zoo (or user) model on a data set and start a run directory."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.stages import TrainOptions
from pipeline.core import rundir
from pipeline.core.errors import UsageError
from pipeline.core.fsutil import read_json, write_json
from pipeline.core.recipes import (
    class_weights,
    compile_for_task,
    model_task,
    optimizer_for,
    zoo_spec,
)
from pipeline.data.dataset import split_for_task
from pipeline.data.streaming import Samples, augmented_input, predict_split, streamed_input, streams
from pipeline.formats.kinds import MODEL
from pipeline.training.checkpoints import (
    CHECKPOINT_STATE,
    atomic_checkpoint,
    given_fields,
    load_checkpoint,
    resume_config,
)
from pipeline.training.distribution import (
    devices,
    import_keras_for,
    is_chief,
    process_local_copy,
    shard,
    shard_indices,
    strategy_for,
)
from pipeline.training.throughput import epoch_timer

log = logging.getLogger("pipeline")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    chief: bool = True  # False: a multi-worker non-chief, whose run_dir is gone


def train(run: str | os.PathLike | None, config: TrainOptions, *, resume: bool = False,
          given: set[str] | None = None, runs_root: str | os.PathLike = rundir.DEFAULT_RUNS_ROOT,
          verbose: int = 1) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` into the run directory ``run`` (None: a new
    one under ``runs_root``); write ``model.keras`` and ``train.json``.

    With ``resume``, the run in ``run`` (or the latest) continues from its checkpoint with its
    own model, data, seed and recipe; ``given`` names the fields the caller set on purpose
    (default: those that differ from ``TrainOptions()``), and one that contradicts the run is
    refused rather than silently ignored.
    """
    from pipeline.data.cache import CACHE_DIR
    from pipeline.data.loaders import check_source, load_dataset

    if resume:
        run_dir = rundir.resolve_run(run, runs_root)
        config = resume_config(run_dir, config, given_fields(config) if given is None else given)
    config = config.with_recipe()
    config.validate()
    keras = import_keras_for(config)
    check_source(config.dataset, model_task(config.model, config.task))
    chief = is_chief(config)
    if not chief:  # a non-chief worker of a cluster: train in step, keep its files to itself
        if resume:
            raise UsageError("--resume with --distribute multiworker is not supported: "
                             "start the cluster on a new run")
        run_dir = Path(tempfile.mkdtemp(prefix="pipeline-worker-"))
    elif not resume:
        run_dir = rundir.new_run_dir(_model_label(config.model), config.dataset, run, runs_root)
    try:
        with rundir.locked(run_dir):
            if chief and not resume:
                rundir.supersede(run_dir)
            # Decoded once into the run's cache; every later command on the run maps it.
            dataset = load_dataset(config.dataset, seed=config.seed, image_size=config.image_size,
                                   val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                                   cache=run_dir / CACHE_DIR, task=model_task(config.model, config.task))
            result = _train_locked(keras, config, dataset, run_dir, resume, verbose, chief)
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
    if chief:
        rundir.point_latest(run_dir, runs_root)
    result.chief = chief
    return result


def _train_locked(keras, config: TrainOptions, dataset, run_dir: Path, resume: bool,
                  verbose: int, chief: bool = True) -> TrainResult:
    from pipeline.core.modelio import float32_copy, save_model

    model, task, initial_epoch, trained_on = _model_to_train(keras, config, dataset, run_dir, resume)
    history = read_json(run_dir / CHECKPOINT_STATE)["history"] if resume else {}
    log.info("training on %s", ", ".join(trained_on))
    timer = _fit(keras, model, config, dataset, task, run_dir, history, initial_epoch, verbose)
    if config.distribute == "multiworker" and keras.backend.backend() == "jax":
        model = process_local_copy(keras, model, task)
    outcome = _evaluate(model, config, dataset, task, history)
    model = float32_copy(model)
    model_path = save_model(model, run_dir / MODEL)
    metrics = {
        "model": config.model,
        "task": task,
        **outcome,
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(timer.total_seconds, 3),
        **timer.throughput(len(dataset.y_train)),
        "backend": keras.backend.backend(),
        "devices": trained_on,
        "device_kind": "gpu" if any("gpu" in d.lower() or "cuda" in d.lower() for d in trained_on) else "cpu",
        "distribute": config.distribute,
        "mixed_precision": config.mixed_precision,
        "params": int(model.count_params()),
        "history": history,
        "config": dataclasses.asdict(config),
        "data": dataset.describe(),
    }
    if not chief:
        return TrainResult(run_dir, metrics)
    train_json = write_json(run_dir / "train.json", metrics)
    rundir.update_manifest(run_dir, "train", artifacts=[model_path, train_json],
                           seed=config.seed, dataset=metrics["data"]["name"],
                           dataset_sha256=metrics["data"]["sha256"])
    return TrainResult(run_dir, metrics)


def _model_to_train(keras, config: TrainOptions, dataset, run_dir: Path, resume: bool):
    """A compiled model (new, or the run's checkpoint) in fresh Keras state, with its task,
    the epoch it starts at and the devices it trains on."""
    from pipeline.core.backend import seed_everything

    # Fresh Keras state: auto-generated layer names ("dense", "dense_1") end up in the saved
    # model and in every artifact's tensor names, so they must not depend on what this process
    # built before. Then seed (clearing the session also clears the seed).
    keras.backend.clear_session()
    seed_everything(config.seed)
    used = devices(keras)
    strategy = strategy_for(config.distribute, keras)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    task, num_train = model_task(config.model, config.task), len(dataset.y_train)
    with strategy.scope() if strategy else contextlib.nullcontext():
        if resume:
            model, initial_epoch = load_checkpoint(keras, run_dir, config, num_train, task)
        else:
            model, initial_epoch = _build(keras, config, dataset), 0
            compile_for_task(model, task, optimizer_for(keras, config, num_train))
    return model, task, initial_epoch, used


def _fit(keras, model, config: TrainOptions, dataset, task: str, run_dir: Path, history: dict,
         initial_epoch: int, verbose: int):
    """``model.fit`` with checkpoints, the schedule's callbacks and this worker's shard; returns
    the epoch timer."""
    timer = epoch_timer(keras)
    callbacks = [*_callbacks(keras, config, run_dir, history), timer]  # last: checkpoints count
    if streams(config, dataset):
        return _fit_streamed(keras, model, config, dataset, task, callbacks, timer, initial_epoch, verbose)
    (x_train, y_train), (x_val, y_val) = split_for_task(dataset, "train", task), split_for_task(dataset, "val", task)
    ((fit_x, fit_y), (fit_x_val, fit_y_val)), batch_size = shard(
        config, keras, (x_train, y_train), (x_val, y_val))
    train_input = augmented_input(keras, config, fit_x, fit_y, batch_size)
    started = time.perf_counter()
    model.fit(
        train_input if train_input is not None else fit_x,
        None if train_input is not None else fit_y,
        batch_size=None if train_input is not None else batch_size,
        epochs=config.epochs, initial_epoch=initial_epoch,
        validation_data=(fit_x_val, fit_y_val) if len(fit_x_val) else None,
        class_weight=class_weights(config.class_weight, y_train) if task == "classifier" else None,
        callbacks=callbacks, verbose=verbose, shuffle=True)
    timer.total_seconds = time.perf_counter() - started
    return timer


def _evaluate(model, config: TrainOptions, dataset, task: str, history: dict) -> dict:
    """Re-estimate BatchNorm statistics, score the test split, and check for a collapse."""
    from pipeline.core.batchnorm import MAX_SAMPLES, batchnorm_layers, recalibrate_batchnorm
    from pipeline.core.tasks import test_metric_of
    from pipeline.training.collapse import check_collapse, judge

    recalibrated = 0
    if batchnorm_layers(model):  # the samples it would draw from the whole split, preprocessed per batch
        recalibrated = recalibrate_batchnorm(
            model, Samples(dataset, "train", dataset.sample_indices("train", MAX_SAMPLES, config.seed)),
            seed=config.seed)
    streamed = streams(config, dataset)
    if streamed:
        import keras

        evaluation = model.evaluate(streamed_input(keras, dataset, "test", None, 256, task=task),
                                    verbose=0, return_dict=True)
    else:
        x_test, y_test = split_for_task(dataset, "test", task)
        evaluation = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    collapse = None
    if task == "classifier":
        check = "val" if dataset.size("val") else "train"
        if streamed:
            predicted = predict_split(model, dataset, check)
            accuracy = float(np.mean(predicted.argmax(-1) == getattr(dataset, f"y_{check}")))
            collapse = judge(accuracy, np.asarray(getattr(dataset, f"y_{check}")), history, dataset.num_classes)
        else:
            x_check, y_check = dataset.split(check)
            collapse = check_collapse(model, x_check, y_check, history, dataset.num_classes)
        if collapse["collapsed"]:
            log.warning("warning: %s", collapse["reason"])
    return {
        "test_accuracy": float(evaluation["accuracy"]) if "accuracy" in evaluation else None,
        "test_loss": float(evaluation["loss"]),
        **({} if task == "classifier" else {"test_metric": test_metric_of(model, dataset, task)}),
        "collapsed": bool(collapse and collapse["collapsed"]),
        "collapse_check": collapse,
        "batchnorm_recalibrated_layers": recalibrated,
    }




def _model_label(model: str) -> str:
    return Path(model).stem if os.sep in model or "." in model else model


def _build(keras, config: TrainOptions, dataset):
    from pipeline.core.modelio import check_class_count, check_input_shape, is_model_path, load_model

    if is_model_path(config.model):
        model = load_model(config.model, unsafe=config.unsafe)
        check_input_shape(model, dataset.input_shape, config.model)
        if dataset.task == "classifier":
            check_class_count(model, dataset.num_classes, config.model)
        else:
            from pipeline.training.import_model import check_outputs

            check_outputs(model, dataset, dataset.task, config.model)
        return model
    return zoo_spec(config.model).build(tuple(dataset.input_shape), int(dataset.num_classes))



def _callbacks(keras, config: TrainOptions, run_dir: Path, history: dict) -> list:
    callbacks = [atomic_checkpoint(keras, config, run_dir, history)]
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            patience=config.early_stopping, restore_best_weights=True))
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.5))
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401 - TensorFlow no longer pulls it in
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")))
    return callbacks



def _fit_streamed(keras, model, config: TrainOptions, dataset, task: str, callbacks, timer,
                  initial_epoch: int, verbose: int):
    """``model.fit`` on batches preprocessed as they are drawn: memory grows with the batch,
    not with the data set (a PyDataset, which every backend's trainer reads)."""
    indices, batch_size = shard_indices(config, keras, dataset)
    train_input = streamed_input(keras, dataset, "train", indices["train"], batch_size, task=task,
                                 shuffle_seed=config.seed, augment=config.augment)
    validation = (streamed_input(keras, dataset, "val", indices["val"], 256, task=task)
                  if dataset.size("val") else None)
    started = time.perf_counter()
    model.fit(train_input, epochs=config.epochs, initial_epoch=initial_epoch, validation_data=validation,
              class_weight=(class_weights(config.class_weight, np.asarray(dataset.y_train))
                            if task == "classifier" else None),
              callbacks=callbacks, verbose=verbose, shuffle=False)  # the input shuffles itself, seeded
    timer.total_seconds = time.perf_counter() - started
    return timer



def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.training.train CONFIG_JSON OUT``: train in a child process (another backend)."""
    import sys

    from pipeline.core.errors import PipelineError

    args = sys.argv[1:] if argv is None else argv
    config = TrainOptions(**json.loads(args[0]))
    try:
        result = train(args[1], config, verbose=0)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"run_dir": str(result.run_dir), "test_accuracy": result.metrics["test_accuracy"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
