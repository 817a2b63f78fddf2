"""QAT's fine-tune: every weight and range trained at a low learning rate, early-stopped on the
validation loss, checkpointed after every epoch so a killed fine-tune resumes; under the run's
training backend (a model trained under jax is fine-tuned under jax in a child process, and
converted under TensorFlow here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.optimizing.qat import _tie

PATIENCE = 2  # epochs without a lower validation loss before fine-tuning stops


def fine_tune(qat_model, splits, *, task: str, epochs: int, learning_rate: float, batch_size: int = 32,
              seed: int = 0, checkpoints=None):
    """Fine-tune every weight and range at ``learning_rate`` (Adam) on the train split of
    ``splits`` (``optimizing.splits``: in memory, or streamed as the run's training streamed),
    early-stopped on the validation loss (``PATIENCE``) with the best epoch's weights restored.
    The calibrated model before any fine-tuning competes too: when no epoch lowers the validation
    loss below it, its weights are kept (``kept`` says which). With ``checkpoints`` (a ``Checkpoints``), the state
    after every epoch is saved there and a killed fine-tune resumes from it. Returns the model
    (the resumed one where it resumed) and the history."""
    from pipeline.core.backend import seed_everything

    seed_everything(seed)
    validating = splits.has_val
    state = checkpoints.resume() if checkpoints is not None else None
    if state is None:
        state = start(qat_model, splits, task=task, learning_rate=learning_rate, checkpoints=checkpoints)
    else:
        qat_model = checkpoints.last_model()
        if not state.pop("handed_over", False):  # a killed fine-tune resumed, not one begun by another process
            state["resumed_from_epoch"] = state["epoch"]
            seed_everything(seed + state["epoch"])  # the epochs after a resume draw their own shuffles
    tracker = _early_stopping(state, checkpoints, validating)
    if checkpoints is None and validating:
        tracker.best_weights = qat_model.get_weights()  # the calibrated model: the first candidate
    if not state["stopped"] and state["epoch"] < epochs:
        splits.fit(qat_model, batch_size, epochs, [tracker], initial_epoch=state["epoch"])
    record = {key: list(values) for key, values in state["history"].items()}
    record["kept"] = "fine-tuned"
    if validating:
        record["val_loss_before"] = state["val_loss_before"]
        if state["best_epoch"] == 0:
            record["kept"] = "calibrated (no epoch lowered the validation loss)"
        if checkpoints is not None:
            qat_model = checkpoints.best_model()
        else:
            qat_model.set_weights(tracker.best_weights)
    record["resumed_from_epoch"] = state["resumed_from_epoch"]
    _tie(qat_model)
    return qat_model, record


def start(qat_model, splits, *, task: str, learning_rate: float, checkpoints=None, handed_over: bool = False) -> dict:
    """The fine-tune's first state: the model compiled, its validation loss before any epoch;
    saved (the calibrated model, the first candidate) where there are ``checkpoints``, for
    another process to begin from where ``handed_over``."""
    import keras

    from pipeline.core.recipes import compile_for_task

    compile_for_task(qat_model, task, keras.optimizers.Adam(learning_rate=learning_rate, name="qat_adam"))
    before = splits.val_loss(qat_model) if splits.has_val else None
    state = {"epoch": 0, "history": {}, "val_loss_before": before, "best_val_loss": before, "best_epoch": 0,
             "wait": 0, "stopped": False, "resumed_from_epoch": None}
    if checkpoints is not None:
        checkpoints.save(qat_model, {**state, "handed_over": True} if handed_over else state, best=True)
    return state


def _early_stopping(state: dict, checkpoints, validating: bool):
    """A Keras callback keeping the state a resume needs: the history, the best validation loss
    and its epoch (0: the calibrated model), the epochs waited; saved after every epoch."""
    import keras

    class Tracker(keras.callbacks.Callback):
        def __init__(self, state, checkpoints, validating):
            super().__init__()
            self.state, self.checkpoints, self.validating = state, checkpoints, validating
            self.best_weights = None

        def on_epoch_end(self, epoch, logs=None):
            state = self.state
            for key, value in (logs or {}).items():
                state["history"].setdefault(key, []).append(float(value))
            state["epoch"] = epoch + 1
            improved = False
            if self.validating:
                loss = float(logs["val_loss"])
                improved = state["best_val_loss"] is None or loss < state["best_val_loss"]
                if improved:
                    state["best_val_loss"], state["best_epoch"], state["wait"] = loss, epoch + 1, 0
                    if self.checkpoints is None:
                        self.best_weights = self.model.get_weights()
                else:
                    state["wait"] += 1
                    if state["wait"] >= PATIENCE:
                        state["stopped"] = True
                        self.model.stop_training = True
            if self.checkpoints is not None:
                self.checkpoints.save(self.model, state, best=improved)

    return Tracker(state, checkpoints, validating)


class Checkpoints:
    """A fine-tune's state in ``directory`` (``last.keras`` with its optimizer, ``best.keras``,
    ``state.json``), valid only for the same inputs (``fingerprint``): a killed fine-tune
    resumes; one with other inputs starts afresh."""

    def __init__(self, directory, fingerprint: str):
        self.directory, self.fingerprint = Path(directory), fingerprint

    def resume(self) -> dict | None:
        from pipeline.core.fsutil import read_json

        path = self.directory / "state.json"
        try:
            state = read_json(path) if path.is_file() else None
        except Exception:  # noqa: BLE001 - a damaged state is no state: start afresh
            return None
        valid = (isinstance(state, dict) and state.get("fingerprint") == self.fingerprint
                 and isinstance(state.get("epoch"), int) and isinstance(state.get("history"), dict)
                 and (self.directory / "last.keras").is_file() and (self.directory / "best.keras").is_file())
        return {k: v for k, v in state.items() if k != "fingerprint"} if valid else None

    def save(self, model, state: dict, best: bool) -> None:
        from pipeline.core.fsutil import make_dirs, write_json
        from pipeline.core.modelio import save_model

        make_dirs(self.directory)
        _tie(model)  # the copies a tied range holds are saved current
        save_model(model, self.directory / "last.keras")
        if best:
            save_model(model, self.directory / "best.keras")
        write_json(self.directory / "state.json", {**state, "fingerprint": self.fingerprint})

    def _load(self, name: str, compile: bool = False):
        import pipeline.core.fake_quant  # noqa: F401  (registers the layers)
        from pipeline.core.modelio import load_model

        model = load_model(self.directory / name, unsafe=False, compile=compile)
        _tie(model)
        return model

    def last_model(self):
        """The model as the last epoch left it, compiled, with its optimizer's state."""
        return self._load("last.keras", compile=True)

    def best_model(self):
        return self._load("best.keras")

    def clear(self) -> None:
        from pipeline.core.fsutil import remove_file

        for name in ("state.json", "last.keras", "best.keras"):
            remove_file(self.directory / name)


CHILD_BACKENDS = ("jax",)  # training backends whose QAT fine-tune runs in a child process under them


def fine_tune_in_child(backend: str, qat_model, splits, context, *, epochs: int, learning_rate: float,
                       seed: int, checkpoints: Checkpoints):
    """``fine_tune`` under ``backend`` (the run's training backend): begun here (compiled, its
    validation loss before any epoch, the calibrated model saved in ``checkpoints``), trained in
    a child process under ``backend`` from that checkpoint (a killed one resumes from its last
    epoch, as here), and the chosen model loaded back here, under TensorFlow, to be converted."""
    from pipeline.core.backend import run_under_backend
    from pipeline.core.fsutil import read_json, remove_file

    if checkpoints.resume() is None:
        start(qat_model, splits, task=context.task, learning_rate=learning_rate, checkpoints=checkpoints,
              handed_over=True)
    record_path = checkpoints.directory / "record.json"
    remove_file(record_path)
    job = {"run": str(context.run_dir), "task": context.task, "epochs": epochs, "learning_rate": learning_rate,
           "seed": seed, "checkpoints": str(checkpoints.directory), "fingerprint": checkpoints.fingerprint}
    run_under_backend(backend, "pipeline.optimizing.qat_fine_tune", [json.dumps(job)], context.run_dir,
                      "QAT fine-tune")
    record = read_json(record_path)
    remove_file(record_path)
    return (checkpoints.best_model() if splits.has_val else checkpoints.last_model()), record


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.optimizing.qat_fine_tune JOB_JSON``: the fine-tune of
    ``fine_tune_in_child``, under this process's ``KERAS_BACKEND``."""
    from pipeline.core.backend import import_keras
    from pipeline.core.errors import PipelineError
    from pipeline.core.fsutil import write_json
    from pipeline.data.context import RunContext
    from pipeline.optimizing.splits import fine_tuning_splits

    job = json.loads((sys.argv[1:] if argv is None else argv)[0])
    keras = import_keras()
    try:
        context = RunContext(Path(job["run"]))
        checkpoints = Checkpoints(job["checkpoints"], job["fingerprint"])
        _, record = fine_tune(None, fine_tuning_splits(keras, context), task=job["task"], epochs=job["epochs"],
                              learning_rate=job["learning_rate"], seed=job["seed"], checkpoints=checkpoints)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    write_json(checkpoints.directory / "record.json", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
