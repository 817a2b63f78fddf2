"""``pipeline import``: start a run directory from a model the user already has."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from pipeline.core import rundir
from pipeline.core.errors import ModelError
from pipeline.core.fsutil import write_json
from pipeline.formats.kinds import MODEL


def import_model(model_path: str | os.PathLike, *, dataset: str, seed: int = 0,
                 image_size: int | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, unsafe: bool = False, task: str | None = None,
                 input_scale: float | None = None, input_offset: float | None = None,
                 out: str | os.PathLike | None = None,
                 runs_root: str | os.PathLike = rundir.DEFAULT_RUNS_ROOT):
    """Load ``model_path`` (.keras, Keras 2 .h5, SavedModel), check it against the data set,
    and write ``model.keras`` + ``train.json`` so every later stage can work on it.

    ``input_scale``/``input_offset`` declare what the model takes: ``raw * scale + offset``
    (``1`` and ``0`` for a model with its own Rescaling layer), replacing the data set's own
    preprocessing in every sidecar. A classifier scoring near chance is a warning naming what
    to check."""
    from pipeline.config.stages import TrainOptions
    from pipeline.core.backend import import_keras
    from pipeline.core.limits import check
    from pipeline.core.modelio import check_class_count, check_input_shape, float32_copy, load_model, save_model
    from pipeline.core.tasks import TaskError, evaluate, normalize_task
    from pipeline.data.loaders import load_dataset

    check("seed", seed)
    check("image_size", image_size)
    check("val_fraction", val_fraction)
    if task is not None:
        try:
            task = normalize_task(task)
        except TaskError as exc:
            raise ModelError(f"--task: {exc}") from None
    import_keras()
    model = float32_copy(load_model(model_path, unsafe=unsafe))
    task = task or detect_task(model, dataset, str(model_path))
    data = load_dataset(dataset, seed=seed, image_size=image_size, val_fraction=val_fraction,
                        test_fraction=test_fraction, task=task)
    data = declared_input(data, input_scale, input_offset)
    check_input_shape(model, data.input_shape, str(model_path))
    if task == "classifier":
        check_class_count(model, data.num_classes, str(model_path))
    else:
        check_outputs(model, data, task, str(model_path))
    x_test, y_test = data.split("test")
    started = time.perf_counter()
    predictions = model.predict(x_test, batch_size=256, verbose=0)
    seconds = time.perf_counter() - started
    if task == "classifier" and predictions.shape[-1] != data.num_classes:
        raise ModelError(f"{model_path} outputs {predictions.shape[-1]} values per sample, "
                         f"the data set has {data.num_classes} classes")
    try:  # before the run directory exists: a metric that cannot be computed writes nothing
        scored = None if task == "classifier" else evaluate(task, predictions, x_test, y_test, data.groups_test)
    except TaskError as exc:
        raise ModelError(f"{model_path} on {dataset}: {exc}") from None
    declared = input_scale is not None or input_offset is not None
    chance = chance_check(model, predictions, y_test, data, declared) if task == "classifier" else None
    run_dir = rundir.new_run_dir(Path(model_path).stem, dataset, out, runs_root)
    with rundir.locked(run_dir):
        rundir.supersede(run_dir)
        saved = save_model(model, run_dir / MODEL)
        config = TrainOptions(model=str(model_path), dataset=dataset, seed=seed, image_size=image_size,
                             val_fraction=val_fraction, test_fraction=test_fraction, unsafe=unsafe)
        metrics = {
            "model": str(model_path), "task": task, "imported_from": str(model_path),
            "test_accuracy": float(np.mean(predictions.argmax(-1) == y_test)) if task == "classifier" else None,
            **({"test_metric": scored} if scored else {}),
            **({"collapse_check": chance} if chance else {}),
            "test_loss": None, "epochs_run": 0, "train_seconds": 0.0,
            "samples_per_second": round(len(x_test) / seconds, 1) if seconds else None,
            "backend": "tensorflow", "devices": [], "params": int(model.count_params()),
            "history": {}, "config": config.__dict__, "data": data.describe(),
        }
        train_json = write_json(run_dir / "train.json", metrics)
        rundir.update_manifest(run_dir, "import", artifacts=[saved, train_json], seed=seed,
                               dataset=dataset, dataset_sha256=metrics["data"]["sha256"])
    rundir.point_latest(run_dir, runs_root)
    return run_dir, metrics


def declared_input(data, input_scale: float | None, input_offset: float | None):
    """The data set with the model's declared input (``raw * scale + offset``) in place of its
    own preprocessing; as it is when neither is given."""
    if input_scale is None and input_offset is None:
        return data
    import dataclasses

    from pipeline.core.limits import check

    scale = 1.0 if input_scale is None else float(input_scale)
    offset = 0.0 if input_offset is None else float(input_offset)
    check("input_scale", scale, label="--input-scale:")
    check("input_offset", offset, label="--input-offset:")
    spec = {**data.preprocessing, "scale": scale, "mean": -offset if offset else None, "std": None}
    return dataclasses.replace(data, preprocessing=spec)


# A model with its own scaling layer, fed the data set's scaling too: warned when raw samples
# score at least this much better than the scaled ones.
DOUBLE_SCALING_GAIN = 0.05


def chance_check(model, predictions, y_test, data, declared: bool = False) -> dict:
    """An imported classifier that scores near chance, or that has a scaling layer of its own and
    scores clearly better on raw samples than on the data set's scaled ones: a warning that says
    what to pass; the verdict is recorded in train.json."""
    import logging

    from pipeline.training.collapse import judge

    accuracy = float(np.mean(predictions.argmax(-1) == y_test))
    verdict = judge(accuracy, y_test, {}, data.num_classes)
    scaling = [layer.name for layer in model.layers if type(layer).__name__ in ("Rescaling", "Normalization")]
    spec = data.preprocessing
    fed = f"raw * {spec.get('scale') or 1:.6g}" + (f" - {spec['mean']}" if spec.get("mean") is not None else "")
    warn = logging.getLogger("pipeline").warning
    if scaling and not declared and (spec.get("scale") or 1) != 1:
        raw = model.predict(np.asarray(data.x_test, dtype=np.float32), batch_size=256, verbose=0)
        raw_accuracy = float(np.mean(raw.argmax(-1) == y_test))
        verdict["raw_input_accuracy"] = round(raw_accuracy, 6)
        if raw_accuracy >= accuracy + DOUBLE_SCALING_GAIN:
            warn("warning: the imported model scales its own input (%s) and scores %.1f%% fed %s, %.1f%% fed raw "
                 "samples: pass --input-scale 1 --input-offset 0", ", ".join(scaling), accuracy * 100, fed,
                 raw_accuracy * 100)
            return verdict
    if verdict["collapsed"]:
        hint = "pass --input-scale/--input-offset with the scaling it was trained with, or check --dataset"
        warn("warning: the imported model scores %.1f%% on the test split, chance is %.1f%%: it is fed %s; if that "
             "is not what it was trained on, %s", accuracy * 100, verdict["chance"] * 100, fed, hint)
    return verdict


def detect_task(model, dataset: str, where: str) -> str:
    """The task of a model given without ``--task``: an output shaped like its input
    reconstructs it; float targets in the data set (not whole numbers) mean a regression; whole
    labels a classifier. Where both readings fit, one error line asks for ``--task``."""
    from pipeline.data.loaders import dataset_tasks

    inputs, outputs = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    only = dataset_tasks(dataset)
    if len(only) == 1 and only[0] != "classifier":  # a data set made for one task
        return only[0]
    floats = _float_targets(dataset)
    if inputs == outputs:
        if floats is False and len(outputs) == 1:
            raise ModelError(f"{where} outputs as many values as it takes ({outputs[0]}), and the data set has class "
                             f"labels: pass --task reconstruction (an autoencoder) or --task classifier")
        return "reconstruction"
    return "regression" if floats else "classifier"


def _float_targets(dataset: str) -> bool | None:
    """Whether an npz data set's ``y_train`` holds targets that are not whole numbers (None:
    not an npz, or no ``y_train``)."""
    import zipfile

    kind, _, path = dataset.partition(":")
    if kind != "npz":
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "y_train" not in archive:
                return None
            y = archive["y_train"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None  # the loader says what is wrong with it
    if y.dtype.kind != "f":
        return False
    finite = y[np.isfinite(y)]
    return bool(y.ndim > 1 and y.shape[-1] > 1 and not np.all(np.isin(finite, (0.0, 1.0)))) or \
        bool(finite.size and np.any(finite != np.round(finite)))


def check_outputs(model, data, task: str, where: str) -> None:
    """An autoencoder outputs its input's shape; a regression one value per target."""
    outputs = tuple(model.output_shape[1:])
    if task == "reconstruction" and int(np.prod([d or 0 for d in outputs])) != int(np.prod(data.input_shape)):
        raise ModelError(f"{where} outputs shape {outputs}, its input is {data.input_shape}: an autoencoder "
                         f"reconstructs its input (--task reconstruction)")
    if task == "regression" and int(np.prod([d or 0 for d in outputs])) != data.y_train.shape[1]:
        raise ModelError(f"{where} outputs shape {outputs} per sample, the data set has {data.y_train.shape[1]} "
                         f"targets per sample")
