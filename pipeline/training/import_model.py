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
                 test_fraction: float = 0.2, unsafe: bool = False,
                 out: str | os.PathLike | None = None,
                 runs_root: str | os.PathLike = rundir.DEFAULT_RUNS_ROOT):
    """Load ``model_path`` (.keras, Keras 2 .h5, SavedModel), check it against the data set,
    and write ``model.keras`` + ``train.json`` so every later stage can work on it."""
    from pipeline.config.stages import TrainOptions
    from pipeline.core.backend import import_keras
    from pipeline.core.limits import check
    from pipeline.core.modelio import check_class_count, check_input_shape, float32_copy, load_model, save_model
    from pipeline.data.loaders import load_dataset

    check("seed", seed)
    check("image_size", image_size)
    check("val_fraction", val_fraction)
    import_keras()
    data = load_dataset(dataset, seed=seed, image_size=image_size, val_fraction=val_fraction,
                        test_fraction=test_fraction)
    model = float32_copy(load_model(model_path, unsafe=unsafe))
    check_input_shape(model, data.input_shape, str(model_path))
    check_class_count(model, data.num_classes, str(model_path))
    run_dir = rundir.new_run_dir(Path(model_path).stem, dataset, out, runs_root)
    with rundir.locked(run_dir):
        rundir.supersede(run_dir)
        x_test, y_test = data.split("test")
        started = time.perf_counter()
        predictions = model.predict(x_test, batch_size=256, verbose=0)
        seconds = time.perf_counter() - started
        if predictions.shape[-1] != data.num_classes:
            raise ModelError(f"{model_path} outputs {predictions.shape[-1]} values per sample, "
                             f"the data set has {data.num_classes} classes")
        saved = save_model(model, run_dir / MODEL)
        config = TrainOptions(model=str(model_path), dataset=dataset, seed=seed, image_size=image_size,
                             val_fraction=val_fraction, test_fraction=test_fraction, unsafe=unsafe)
        metrics = {
            "model": str(model_path), "task": "classifier", "imported_from": str(model_path),
            "test_accuracy": float(np.mean(predictions.argmax(-1) == y_test)),
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
