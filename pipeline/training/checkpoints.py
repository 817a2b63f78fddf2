"""Resuming a run: the checkpoint written atomically after each epoch (within a time
budget), the training config it records, and loading it back with its optimizer state."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from pipeline.core.errors import UsageError
from pipeline.core.fsutil import read_json, write_json
from pipeline.core.recipes import compile_for_task, optimizer_for

log = logging.getLogger("pipeline")

CHECKPOINT = "checkpoints/last.keras"
CHECKPOINT_STATE = "checkpoints/state.json"

# What a resumed run may change; everything else is the run's own.
RESUMABLE = ("epochs", "early_stopping", "tensorboard", "distribute", "unsafe")


def given_fields(config) -> set[str]:
    defaults = type(config)()
    return {f.name for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(defaults, f.name)}


def resume_config(run_dir: Path, config, given: set[str]):
    """The run's own training config from its checkpoint state, with the fields a resume may
    change taken from ``config`` (those in ``given``); a contradiction of the rest is refused."""
    from pipeline.core.errors import RunDirError

    state_path = run_dir / CHECKPOINT_STATE
    if not state_path.exists() or not (run_dir / CHECKPOINT).exists():
        raise RunDirError(f"{run_dir} has no checkpoint to resume from ({CHECKPOINT})")
    saved_fields = read_json(state_path).get("config")
    if not isinstance(saved_fields, dict):
        raise RunDirError(f"{state_path} does not record the run's training config: "
                          f"it was written by an older version; start a new run")
    known = {f.name for f in dataclasses.fields(config)}
    try:
        saved = type(config)(**{k: v for k, v in saved_fields.items() if k in known})
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


# A checkpoint may cost at most this fraction of the training time between two checkpoints:
# on a GPU an epoch can take less than a second, and saving after every one would dominate.
CHECKPOINT_BUDGET = 0.02


def atomic_checkpoint(keras, config, run_dir: Path, history: dict[str, list[float]]):
    """Atomically save the model, the epoch reached, the curves and the config: after every
    epoch, unless saving would take more than ``CHECKPOINT_BUDGET`` of the time since the last."""
    from pipeline.core.modelio import save_model

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


def load_checkpoint(keras, run_dir: Path, config, num_train: int, task: str):
    """The checkpointed model with its optimizer state, under a learning-rate schedule that
    spans the new total epoch count and continues from the checkpoint's step."""
    from pipeline.core.errors import RunDirError

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
    optimizer = optimizer_for(keras, config, num_train)
    optimizer.build(model.trainable_variables)
    if saved is None or len(saved.variables) != len(optimizer.variables) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(saved.variables, optimizer.variables)):
        raise RunDirError(f"{run_dir / CHECKPOINT} does not hold the optimizer state of a "
                          f"{config.optimizer} run: start a new run")
    for mine, theirs in zip(optimizer.variables, saved.variables):
        mine.assign(theirs)
    compile_for_task(model, task, optimizer)
    return model, epoch
