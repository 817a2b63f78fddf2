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

from pipeline import rundir
from pipeline.config import DataSection, TrainSection
from pipeline.errors import UsageError, unknown_name
from pipeline.formats import MODEL
from pipeline.fsutil import read_json, write_json

log = logging.getLogger("pipeline")

OPTIMIZERS = ("rmsprop", "adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential", "plateau")
DISTRIBUTE = ("none", "mirrored", "multiworker")
CHECKPOINT = "checkpoints/last.keras"
CHECKPOINT_STATE = "checkpoints/state.json"


@dataclass
class TrainConfig(TrainSection, DataSection):
    """Everything ``pipeline train`` needs: the config file's ``data`` and ``train`` sections
    (one definition, so the CLI and the config file cannot drift) plus the command's switches."""

    tensorboard: bool = False
    unsafe: bool = False

    def with_recipe(self) -> "TrainConfig":
        """A copy whose unset training fields come from the model's default recipe."""
        recipe = recipe_for(self.model)
        return dataclasses.replace(self, **{name: recipe[name] for name in recipe
                                            if getattr(self, name) is None})

    def validate(self) -> None:
        for field, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                               ("distribute", DISTRIBUTE), ("stream", STREAM_MODES)):
            if getattr(self, field) not in allowed:
                raise unknown_name(field.replace("_", "-"), getattr(self, field), allowed)
        if self.class_weight not in (None, "balanced"):
            raise unknown_name("class-weight", self.class_weight, ["balanced"])
        from pipeline.limits import check

        for name in ("epochs", "batch_size", "learning_rate", "early_stopping", "seed",
                     "image_size", "val_fraction", "test_fraction"):
            check(name, getattr(self, name))
        from pipeline.backend import BACKENDS

        if self.backend is not None and self.backend not in BACKENDS:
            raise unknown_name("backend", self.backend, BACKENDS)
        if self.tensorboard and self.backend not in (None, "tensorflow"):
            raise UsageError("--tensorboard writes TensorFlow summaries: use it with --backend tensorflow")
        if self.distribute == "multiworker" and self.backend == "torch":
            raise UsageError("--distribute multiworker runs on tensorflow (TF_CONFIG) or jax "
                             "(KERAS_DISTRIBUTION_*), not torch")


def zoo_spec(name: str):
    """The zoo's entry for ``name``; an unknown name is a usage error naming the closest."""
    import models

    try:
        return models.get_model_spec(name)
    except models.UnknownModelError as exc:
        raise unknown_name("model", exc.name, exc.known) from None


def recipe_for(model: str) -> dict[str, Any]:
    """The default training recipe of a zoo model (a user's model file gets the common one)."""
    from models.registry import DEFAULT_RECIPE
    from pipeline.modelio import is_model_path

    if is_model_path(model):
        return dict(DEFAULT_RECIPE)
    return zoo_spec(model).full_recipe()


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    chief: bool = True  # False: a multi-worker non-chief, whose run_dir is gone


def train(config: TrainConfig, *, out: str | os.PathLike | None = None, resume: bool = False,
          given: set[str] | None = None, runs_root: str | os.PathLike = rundir.DEFAULT_RUNS_ROOT,
          verbose: int = 1) -> TrainResult:
    """Train ``config.model`` on ``config.dataset``; write ``model.keras`` and ``train.json``.

    With ``resume``, the run in ``out`` (or the latest) continues from its checkpoint with its
    own model, data, seed and recipe; ``given`` names the fields the caller set on purpose
    (default: those that differ from ``TrainConfig()``), and one that contradicts the run is
    refused rather than silently ignored.
    """
    from pipeline.data import check_source, load_dataset
    from pipeline.datacache import CACHE_DIR

    if resume:
        run_dir = rundir.resolve_run(out, runs_root)
        config = _resume_config(run_dir, config, _given_fields(config) if given is None else given)
    config = config.with_recipe()
    config.validate()
    keras = _import_keras_for(config)
    check_source(config.dataset)
    chief = is_chief(config)
    if not chief:  # a non-chief worker of a cluster: train in step, keep its files to itself
        if resume:
            raise UsageError("--resume with --distribute multiworker is not supported: "
                             "start the cluster on a new run")
        run_dir = Path(tempfile.mkdtemp(prefix="pipeline-worker-"))
    elif not resume:
        run_dir = rundir.new_run_dir(_model_label(config.model), config.dataset, out, runs_root)
    try:
        with rundir.locked(run_dir):
            if chief and not resume:
                rundir.supersede(run_dir)
            # Decoded once into the run's cache; every later command on the run maps it.
            dataset = load_dataset(config.dataset, seed=config.seed, image_size=config.image_size,
                                   val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                                   cache=run_dir / CACHE_DIR)
            result = _train_locked(keras, config, dataset, run_dir, resume, verbose, chief)
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
    if chief:
        rundir.point_latest(run_dir, runs_root)
    result.chief = chief
    return result


# What a resumed run may change; everything else is the run's own.
RESUMABLE = ("epochs", "early_stopping", "tensorboard", "distribute", "unsafe")


def _given_fields(config: TrainConfig) -> set[str]:
    defaults = TrainConfig()
    return {f.name for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(defaults, f.name)}


def _resume_config(run_dir: Path, config: TrainConfig, given: set[str]) -> TrainConfig:
    from pipeline.errors import RunDirError

    state_path = run_dir / CHECKPOINT_STATE
    if not state_path.exists() or not (run_dir / CHECKPOINT).exists():
        raise RunDirError(f"{run_dir} has no checkpoint to resume from ({CHECKPOINT})")
    saved_fields = read_json(state_path).get("config")
    if not isinstance(saved_fields, dict):
        raise RunDirError(f"{state_path} does not record the run's training config: "
                          f"it was written by an older version; start a new run")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        saved = TrainConfig(**{k: v for k, v in saved_fields.items() if k in known})
    except TypeError as exc:
        raise RunDirError(f"{state_path}: unreadable training config ({exc})") from None
    conflicts = [f"--{name.replace('_', '-')} {getattr(config, name)} (the run has "
                 f"{getattr(saved, name)})" for name in sorted(given)
                 if name not in RESUMABLE and getattr(config, name) != getattr(saved, name)]
    if conflicts:
        raise UsageError(f"cannot resume {run_dir} with {', '.join(conflicts)}: a resumed run "
                         f"keeps its model, data and recipe; start a new run instead")
    # Trust comes from this invocation alone, never from the run's files.
    return dataclasses.replace(saved, unsafe=config.unsafe,
                               **{name: getattr(config, name) for name in RESUMABLE if name in given})


def _train_locked(keras, config: TrainConfig, dataset, run_dir: Path, resume: bool,
                  verbose: int, chief: bool = True) -> TrainResult:
    from pipeline.modelio import float32_copy, save_model

    model, task, initial_epoch, devices = _model_to_train(keras, config, dataset, run_dir, resume)
    history = read_json(run_dir / CHECKPOINT_STATE)["history"] if resume else {}
    log.info("training on %s", ", ".join(devices))
    timer = _fit(keras, model, config, dataset, task, run_dir, history, initial_epoch, verbose)
    if config.distribute == "multiworker" and keras.backend.backend() == "jax":
        model = _process_local_copy(keras, model, task)
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
        "devices": devices,
        "device_kind": "gpu" if any("gpu" in d.lower() or "cuda" in d.lower() for d in devices) else "cpu",
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


def _model_to_train(keras, config: TrainConfig, dataset, run_dir: Path, resume: bool):
    """A compiled model (new, or the run's checkpoint) in fresh Keras state, with its task,
    the epoch it starts at and the devices it trains on."""
    from pipeline.backend import seed_everything

    # Fresh Keras state: auto-generated layer names ("dense", "dense_1") end up in the saved
    # model and in every artifact's tensor names, so they must not depend on what this process
    # built before. Then seed (clearing the session also clears the seed).
    keras.backend.clear_session()
    seed_everything(config.seed)
    devices = _devices(keras)
    strategy = _strategy(config.distribute, keras)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    task, num_train = _task(config.model), len(dataset.y_train)
    with strategy.scope() if strategy else contextlib.nullcontext():
        if resume:
            model, initial_epoch = _load_checkpoint(keras, run_dir, config, num_train, task)
        else:
            model, initial_epoch = _build(keras, config, dataset), 0
            compile_for_task(model, task, _optimizer(keras, config, num_train))
    return model, task, initial_epoch, devices


def split_for_task(dataset, split: str, task: str):
    """``(x, y)`` of a split, where an autoencoder's target is its input."""
    x, y = dataset.split(split)
    return (x, x) if task == "autoencoder" else (x, y)


def _fit(keras, model, config: TrainConfig, dataset, task: str, run_dir: Path, history: dict,
         initial_epoch: int, verbose: int):
    """``model.fit`` with checkpoints, the schedule's callbacks and this worker's shard; returns
    the epoch timer."""
    timer = _epoch_timer(keras)
    callbacks = [*_callbacks(keras, config, run_dir, history), timer]  # last: checkpoints count
    if streams(config, dataset):
        return _fit_streamed(keras, model, config, dataset, task, callbacks, timer, initial_epoch, verbose)
    (x_train, y_train), (x_val, y_val) = split_for_task(dataset, "train", task), split_for_task(dataset, "val", task)
    ((fit_x, fit_y), (fit_x_val, fit_y_val)), batch_size = _shard(
        config, keras, (x_train, y_train), (x_val, y_val))
    train_input = _training_input(keras, config, fit_x, fit_y, task, batch_size)
    started = time.perf_counter()
    model.fit(
        train_input if train_input is not None else fit_x,
        None if train_input is not None else fit_y,
        batch_size=None if train_input is not None else batch_size,
        epochs=config.epochs, initial_epoch=initial_epoch,
        validation_data=(fit_x_val, fit_y_val) if len(fit_x_val) else None,
        class_weight=_class_weights(config, y_train) if task == "classifier" else None,
        callbacks=callbacks, verbose=verbose, shuffle=True)
    timer.total_seconds = time.perf_counter() - started
    return timer


def _evaluate(model, config: TrainConfig, dataset, task: str, history: dict) -> dict:
    """Re-estimate BatchNorm statistics, score the test split, and check for a collapse."""
    from pipeline.batchnorm import MAX_SAMPLES, batchnorm_layers, recalibrate_batchnorm
    from pipeline.collapse import check_collapse, judge

    recalibrated = 0
    if batchnorm_layers(model):  # the samples it would draw from the whole split, preprocessed per batch
        recalibrated = recalibrate_batchnorm(
            model, _Samples(dataset, "train", dataset.sample_indices("train", MAX_SAMPLES, config.seed)),
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
        "collapsed": bool(collapse and collapse["collapsed"]),
        "collapse_check": collapse,
        "batchnorm_recalibrated_layers": recalibrated,
    }


# -- pieces -------------------------------------------------------------------------------

def _import_keras_for(config: TrainConfig):
    from pipeline.backend import import_keras

    keras = import_keras(config.backend)  # with TensorFlow, also turns on deterministic kernels
    if config.distribute == "multiworker" and keras.backend.backend() == "jax":
        _join_jax_cluster(keras)
    return keras


_joined_jax_cluster = False


def _join_jax_cluster(keras) -> None:
    """``jax.distributed.initialize`` through Keras, once per process and before any JAX call."""
    global _joined_jax_cluster
    if _joined_jax_cluster:
        return
    import jax

    _jax_cluster()  # the environment must describe the cluster
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # for CPU-only clusters
    keras.distribution.initialize()  # reads KERAS_DISTRIBUTION_* (README)
    _joined_jax_cluster = True


def _model_label(model: str) -> str:
    return Path(model).stem if os.sep in model or "." in model else model


def _task(model: str) -> str:
    from pipeline.modelio import is_model_path

    if is_model_path(model):
        return "classifier"
    return zoo_spec(model).task


def _build(keras, config: TrainConfig, dataset):
    from pipeline.modelio import check_class_count, check_input_shape, is_model_path, load_model

    if is_model_path(config.model):
        model = load_model(config.model, unsafe=config.unsafe)
        check_input_shape(model, dataset.input_shape, config.model)
        check_class_count(model, dataset.num_classes, config.model)
        return model
    return zoo_spec(config.model).build(tuple(dataset.input_shape), int(dataset.num_classes))


def compile_for_task(model, task: str, optimizer=None) -> None:
    """The loss and metrics of a task, in one place: training, resuming and fine-tuning agree."""
    model.compile(optimizer=optimizer if optimizer is not None else "rmsprop",
                  loss="sparse_categorical_crossentropy" if task == "classifier" else "mse",
                  metrics=["accuracy"] if task == "classifier" else [])


def _optimizer(keras, config: TrainConfig, num_train: int):
    return make_optimizer(keras, config.optimizer, scheduled_rate(
        keras, config.learning_rate, config.lr_schedule, num_train, config.batch_size, config.epochs))


def scheduled_rate(keras, rate: float, schedule: str, samples: int, batch_size: int, epochs: int):
    """The learning rate, or its schedule over ``epochs`` of ``samples`` ("plateau" is a
    callback on validation loss: the rate itself stays constant)."""
    steps_per_epoch = max(1, -(-samples // batch_size))
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, steps_per_epoch * epochs)
    if schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(rate, steps_per_epoch, 0.9)
    return rate


def make_optimizer(keras, name: str, learning_rate):
    """One of ``OPTIMIZERS`` at this learning rate (or schedule). Named: Keras would number
    unnamed optimizers per process (``rm_sprop_1`` after an earlier one), and the name is
    saved in the ``.keras`` file, so a resumed run would write other bytes than a whole one."""
    return {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
            "sgd": lambda learning_rate, name: keras.optimizers.SGD(learning_rate, momentum=0.9, name=name),
            }[name](learning_rate=learning_rate, name=name)


def _callbacks(keras, config: TrainConfig, run_dir: Path, history: dict) -> list:
    callbacks = [_atomic_checkpoint(keras, config, run_dir, history)]
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


# A checkpoint may cost at most this fraction of the training time between two checkpoints:
# on a GPU an epoch can take less than a second, and saving after every one would dominate.
CHECKPOINT_BUDGET = 0.02


def _atomic_checkpoint(keras, config: TrainConfig, run_dir: Path, history: dict[str, list[float]]):
    """Atomically save the model, the epoch reached, the curves and the config: after every
    epoch, unless saving would take more than ``CHECKPOINT_BUDGET`` of the time since the last."""
    from pipeline.modelio import save_model

    class AtomicCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last_saved = time.perf_counter()
            self.save_seconds = 0.0
            self.saved_epoch = 0

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            if (time.perf_counter() - self.last_saved) * CHECKPOINT_BUDGET >= self.save_seconds:
                self.save()

        def on_train_end(self, logs=None):
            if self.saved_epoch < len(history.get("loss", [])):  # the last epoch is always kept
                self.save()

        def save(self):
            started = time.perf_counter()
            self.saved_epoch = len(history.get("loss", []))
            save_model(self.model, run_dir / CHECKPOINT)
            write_json(run_dir / CHECKPOINT_STATE, {
                "epoch": self.saved_epoch, "history": history, "config": dataclasses.asdict(config)})
            self.last_saved = time.perf_counter()
            self.save_seconds = self.last_saved - started

    return AtomicCheckpoint()


def _epoch_timer(keras):
    """Per-epoch wall time, so compilation (in the first epoch) and steady state are told apart."""

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.total_seconds = 0.0  # the whole fit, set by its caller

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

        def throughput(self, num_train: int) -> dict[str, Any]:
            """First-epoch seconds and steady-state samples/s: the median of the later
            epochs, validation and checkpoints included (what a user waits for)."""
            steady = float(np.median(self.seconds[1:])) if len(self.seconds) > 1 else None
            return {
                "epoch_seconds": [round(t, 3) for t in self.seconds],
                "first_epoch_seconds": round(self.seconds[0], 3) if self.seconds else None,
                "steady_epoch_seconds": round(steady, 3) if steady else None,
                "samples_per_second": round(num_train / steady, 1) if steady else None,
            }

    return Timer()


def _load_checkpoint(keras, run_dir: Path, config: TrainConfig, num_train: int, task: str):
    """The checkpointed model with its optimizer state, under a learning-rate schedule that
    spans the new total epoch count and continues from the checkpoint's step."""
    from pipeline.errors import RunDirError

    epoch = int(read_json(run_dir / CHECKPOINT_STATE)["epoch"])
    if epoch >= config.epochs:
        raise UsageError(f"the checkpoint in {run_dir} already reached epoch {epoch}: "
                         f"pass --epochs above {epoch} to train further")
    log.info("resuming %s from epoch %d of %d", run_dir, epoch, config.epochs)
    try:  # safe mode: a checkpoint is a file like any other
        model = keras.models.load_model(run_dir / CHECKPOINT, safe_mode=not config.unsafe)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds on a damaged archive
        raise RunDirError(f"cannot load {run_dir / CHECKPOINT}: {str(exc).splitlines()[0]}") from None
    saved = getattr(model, "optimizer", None)
    optimizer = _optimizer(keras, config, num_train)
    optimizer.build(model.trainable_variables)
    if saved is None or len(saved.variables) != len(optimizer.variables) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(saved.variables, optimizer.variables)):
        raise RunDirError(f"{run_dir / CHECKPOINT} does not hold the optimizer state of a "
                          f"{config.optimizer} run: start a new run")
    for mine, theirs in zip(optimizer.variables, saved.variables):
        mine.assign(theirs)
    compile_for_task(model, task, optimizer)
    return model, epoch


def is_chief(config: TrainConfig) -> bool:
    """False on a worker of a ``--distribute multiworker`` cluster other than the chief
    (the ``chief`` task, or worker 0 when the cluster names none): only the chief writes the run."""
    if config.distribute != "multiworker":
        return True
    if (config.backend or os.environ.get("KERAS_BACKEND")) == "jax":
        return _jax_cluster()[1] == 0
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError):
        raise UsageError("TF_CONFIG is not valid JSON with a 'cluster' and a 'task'") from None
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def _class_weights(config: TrainConfig, y_train: np.ndarray) -> dict[int, float] | None:
    if config.class_weight != "balanced":
        return None
    classes = np.unique(y_train)
    counts = np.bincount(y_train)[classes]
    weights = len(y_train) / (len(classes) * counts)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def _training_input(keras, config: TrainConfig, x, y, task: str, batch_size: int):
    if not config.augment:
        return None
    if x.ndim != 4:
        raise UsageError("--augment works on images (N, H, W, C); this data set is not one")
    return _ShiftAugmentation.create(keras, x, y, batch_size, config.seed)


class _ShiftAugmentation:
    """Light image augmentation: random shifts of up to 10% per side, per batch, seeded."""

    @staticmethod
    def create(keras, x, y, batch_size: int, seed: int):
        class Shifted(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()
                self.rng = np.random.default_rng(seed)
                self.order = np.arange(len(x))

            def __len__(self):
                return -(-len(x) // batch_size)

            def on_epoch_end(self):
                self.rng.shuffle(self.order)

            def __getitem__(self, index):
                picked = self.order[index * batch_size:(index + 1) * batch_size]
                return _shift(x[picked].copy(), self.rng), y[picked]

        return Shifted()


class _Samples:
    """Chosen samples of a split that preprocess only the slice asked for (``x[a:b]``)."""

    def __init__(self, dataset, split: str, indices: np.ndarray):
        self.dataset, self.split, self.indices = dataset, split, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, part: slice) -> np.ndarray:
        from pipeline.dataset import release

        x = self.dataset.take(self.split, self.indices[part])[0]
        release(getattr(self.dataset, f"x_{self.split}"))
        return x


# Above this many bytes of model-ready training input, training streams (``train.stream``:
# auto): the raw split (a memory map of the run's decode cache) is preprocessed batch by batch.
STREAM_BYTES = 16 << 20
STREAM_MODES = ("auto", "always", "never")


def streams(config: TrainConfig, dataset) -> bool:
    """Whether training and evaluation stream batches instead of holding the split as float32."""
    if config.stream != "auto":
        return config.stream == "always"
    return dataset.size("train") * int(np.prod(dataset.input_shape)) * 4 > STREAM_BYTES


def predict_split(model, dataset, split: str, chunk: int = 1024) -> np.ndarray:
    """A model's predictions on a whole split, preprocessed and run chunk by chunk."""
    from pipeline.dataset import release

    outputs = [np.asarray(model.predict(x, batch_size=256, verbose=0)) for x, _ in dataset.chunks(split, chunk)]
    release(getattr(dataset, f"x_{split}"))
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def _fit_streamed(keras, model, config: TrainConfig, dataset, task: str, callbacks, timer,
                  initial_epoch: int, verbose: int):
    """``model.fit`` on batches preprocessed as they are drawn: memory grows with the batch,
    not with the data set (a PyDataset, which every backend's trainer reads)."""
    indices, batch_size = _shard_indices(config, keras, dataset)
    train_input = streamed_input(keras, dataset, "train", indices["train"], batch_size, task=task,
                                 shuffle_seed=config.seed, augment=config.augment)
    validation = (streamed_input(keras, dataset, "val", indices["val"], 256, task=task)
                  if dataset.size("val") else None)
    started = time.perf_counter()
    model.fit(train_input, epochs=config.epochs, initial_epoch=initial_epoch, validation_data=validation,
              class_weight=_class_weights(config, np.asarray(dataset.y_train)) if task == "classifier" else None,
              callbacks=callbacks, verbose=verbose, shuffle=False)  # the input shuffles itself, seeded
    timer.total_seconds = time.perf_counter() - started
    return timer


def _shard_indices(config: TrainConfig, keras, dataset) -> tuple[dict, int]:
    """The sample indices of train and val this process feeds (``_shard`` by index)."""
    splits = [(np.arange(dataset.size(s)), np.arange(dataset.size(s))) for s in ("train", "val")]
    ((train, _), (val, _)), batch_size = _shard(config, keras, *splits)
    return {"train": train, "val": val}, batch_size


def streamed_input(keras, dataset, split: str, indices, batch_size: int, *, task: str,
                   shuffle_seed: int | None = None, augment: bool = False):
    """The batches of a split for ``fit``/``evaluate``: under TensorFlow a tf.data pipeline
    that reads the cached split's file itself (no Python per batch; measured 2× the
    PyDataset's throughput on ResNet-8 under TensorFlow), otherwise a PyDataset."""
    if keras.backend.backend() == "tensorflow" and not augment:
        pipeline = _tf_records(dataset, split, indices, batch_size, task=task, shuffle_seed=shuffle_seed)
        if pipeline is not None:
            return pipeline
    return _StreamedSplit.create(keras, dataset, split, indices, batch_size, task=task,
                                 shuffle_seed=shuffle_seed, augment=augment)


# Samples a tf.data shuffle buffer holds, at most this many bytes of raw samples: the cache
# keeps each split in a seeded random order already, so the buffer only reorders locally.
SHUFFLE_BUFFER_BYTES = 16 << 20


def _tf_records(dataset, split: str, indices, batch_size: int, *, task: str, shuffle_seed: int | None):
    """A split memory-mapped from the decode cache, read by ``FixedLengthRecordDataset`` and
    preprocessed in TensorFlow with the spec's own arithmetic (float32 scale, mean, std, as
    ``apply_preprocessing``); None where the split is not a whole cached file."""
    import tensorflow as tf

    raw = getattr(dataset, f"x_{split}")
    labels = np.asarray(getattr(dataset, f"y_{split}"))
    whole = indices is None or np.array_equal(np.asarray(indices), np.arange(len(labels)))
    if not (isinstance(raw, np.memmap) and raw.filename and raw.flags.c_contiguous and whole and len(raw)):
        return None
    shape, spec = raw.shape[1:], dataset.preprocessing
    record = int(np.prod(shape)) * raw.dtype.itemsize
    data = tf.data.Dataset.zip(tf.data.FixedLengthRecordDataset(raw.filename, record, header_bytes=raw.offset),
                               tf.data.Dataset.from_tensor_slices(labels))
    data = data.apply(tf.data.experimental.assert_cardinality(len(labels)))  # Keras then knows the steps
    if shuffle_seed is not None:
        buffer = int(min(len(labels), max(batch_size, SHUFFLE_BUFFER_BYTES // record)))
        data = data.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)

    def preprocess(records, y):
        x = tf.cast(tf.reshape(tf.io.decode_raw(records, raw.dtype), (-1, *shape)), tf.float32)
        if spec.get("scale") not in (None, 1.0):
            x = x * np.float32(spec["scale"])
        if spec.get("mean") is not None:
            x = x - np.asarray(spec["mean"], dtype=np.float32)
        if spec.get("std") is not None:
            x = x / np.asarray(spec["std"], dtype=np.float32)
        return (x, x) if task == "autoencoder" else (x, y)

    data = data.batch(batch_size).map(preprocess).prefetch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


class _StreamedSplit:
    """Batches of one split, gathered from its raw (memory-mapped) array and preprocessed per
    batch with the data set's spec; shuffled per epoch with a seeded generator, and optionally
    shifted like ``--augment``'s in-memory path."""

    RELEASE_EVERY = 64  # batches between dropping the split's mapped pages (datacache.release)

    @staticmethod
    def create(keras, dataset, split: str, indices, batch_size: int, *, task: str,
               shuffle_seed: int | None = None, augment: bool = False):
        from edge_runtime.preprocessing import apply_preprocessing
        from pipeline.dataset import release

        raw, labels = getattr(dataset, f"x_{split}"), np.asarray(getattr(dataset, f"y_{split}"))
        chosen = np.arange(len(labels)) if indices is None else np.asarray(indices)
        if augment and raw.ndim != 4:
            raise UsageError("--augment works on images (N, H, W, C); this data set is not one")

        class Streamed(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()
                self.rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
                self.order = chosen.copy()
                if self.rng is not None:
                    self.rng.shuffle(self.order)

            def __len__(self):
                return -(-len(self.order) // batch_size)

            def on_epoch_end(self):
                if self.rng is not None:
                    self.rng.shuffle(self.order)

            def __getitem__(self, index):
                picked = np.sort(self.order[index * batch_size:(index + 1) * batch_size])  # sorted: file order
                x = apply_preprocessing(np.asarray(raw[picked]), dataset.preprocessing)
                if index % _StreamedSplit.RELEASE_EVERY == 0:
                    release(raw)
                if augment:
                    x = _shift(x, np.random.default_rng([shuffle_seed or 0, index, int(picked[0])]))
                return (x, x) if task == "autoencoder" else (x, labels[picked])

        return Streamed()


def _shift(batch: np.ndarray, rng) -> np.ndarray:
    """Random shifts of up to 10% per side, per image (``--augment``)."""
    max_shift = max(1, batch.shape[1] // 10)
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, size=(len(batch), 2))):
        batch[i] = np.roll(batch[i], (dy, dx), axis=(0, 1))
    return batch


def _strategy(distribute: str, keras):
    """A tf.distribute strategy (TensorFlow), or None after setting Keras' own distribution (JAX)."""
    if distribute == "none":
        return None
    if keras.backend.backend() == "jax":
        # Data parallel over every visible accelerator (or the CPU) with Keras' distribution API;
        # over several processes, each feeds its own shard of every batch (see _shard).
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(), auto_shard_dataset=False))
        return None
    if keras.backend.backend() == "torch":
        raise UsageError("--distribute with the torch backend is not supported: use jax or tensorflow")
    import tensorflow as tf

    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise UsageError("--distribute multiworker needs TF_CONFIG describing the cluster "
                         "(see the TensorFlow multi-worker guide)")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        raise UsageError("TF_CONFIG is not valid JSON") from None
    return _keras3_multiworker_reduce(tf.distribute.MultiWorkerMirroredStrategy())


JAX_CLUSTER_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                         "KERAS_DISTRIBUTION_PROCESS_ID")


def _jax_cluster() -> tuple[int, int]:
    """(process count, this process's id) from Keras' distribution variables."""
    missing = [name for name in JAX_CLUSTER_VARIABLES if not os.environ.get(name)]
    if missing:
        raise UsageError(f"--distribute multiworker under jax needs {', '.join(missing)} "
                         f"(see the README section 'Training on several machines')")
    try:
        count = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
        index = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    except ValueError:
        raise UsageError("KERAS_DISTRIBUTION_NUM_PROCESSES and _PROCESS_ID must be integers") from None
    addresses = os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")
    if not (count >= 1 and 0 <= index < count and len(addresses) in (1, count)):
        raise UsageError(f"inconsistent KERAS_DISTRIBUTION_*: process {index} of {count}, "
                         f"{len(addresses)} job addresses")
    return count, index


def _process_local_copy(keras, model, task: str):
    """After multi-process jax training the weights are global arrays (replicated over every
    process); evaluating, checking and saving run on a copy in this process alone."""
    weights = model.get_weights()  # fully replicated: each process can read them
    keras.distribution.set_distribution(None)
    local = keras.models.clone_model(model)
    local.set_weights(weights)
    compile_for_task(local, task)
    return local


def _shard(config: TrainConfig, keras, *splits):
    """Under jax multi-process training every process feeds its own slice of each global
    batch: this process's share of the samples and of the batch size."""
    if config.distribute != "multiworker" or keras.backend.backend() != "jax":
        return splits, config.batch_size
    count, index = _jax_cluster()
    if config.batch_size % count:
        raise UsageError(f"--batch-size {config.batch_size} must be a multiple of the "
                         f"{count} processes")
    # every process takes the same number of samples, so all run the same number of steps
    sharded = []
    for x, y in splits:
        usable = len(x) - len(x) % count
        sharded.append((x[index:usable:count], y[index:usable:count]))
    return sharded, config.batch_size // count


def _keras3_multiworker_reduce(strategy):
    """Work around Keras 3's two calls of ``strategy.reduce`` that MultiWorkerMirroredStrategy
    rejects (keras-team/keras#20585; Keras 3.15): ``fit`` reduces a whole (x, y) batch to
    build the model, and reduces scalar metrics "along axis 0". The batch only lends its
    shapes, so this worker's own copy serves; scalars are reduced without an axis."""
    import tensorflow as tf

    reduce = strategy.reduce

    def patched(reduce_op, value, axis=None):
        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)
        if axis is not None and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return reduce(reduce_op, value, axis=axis)

    strategy.reduce = patched
    return strategy


def _devices(keras) -> list[str]:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [d.name for d in gpus] or ["/physical_device:CPU:0"]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.train CONFIG_JSON OUT``: train in a child process (another backend)."""
    import sys

    from pipeline.errors import PipelineError

    args = sys.argv[1:] if argv is None else argv
    config = TrainConfig(**json.loads(args[0]))
    try:
        result = train(config, out=args[1], verbose=0)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"run_dir": str(result.run_dir), "test_accuracy": result.metrics["test_accuracy"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
