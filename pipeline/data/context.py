"""What every stage after training reads from a run directory: its model and its data."""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.core import rundir
from pipeline.core.errors import DataError, RunDirError
from pipeline.formats.kinds import MODEL, source_model


@dataclass
class RunContext:
    run_dir: Path

    @classmethod
    def open(cls, run: str | Path | None) -> "RunContext":
        run_dir = rundir.resolve_run(run)
        if not (run_dir / "train.json").exists() or not (run_dir / MODEL).exists():
            raise RunDirError(f"{run_dir} has no trained model (model.keras, train.json): "
                              f"run `pipeline train` first")
        return cls(run_dir)

    @classmethod
    def run_stage(cls, run: str | Path | None, options, work):
        """Check ``options``, then do ``work(context, options)`` on the locked run."""
        options.validate()
        with cls.locked(run) as context:
            return work(context, options)

    @classmethod
    @contextlib.contextmanager
    def locked(cls, run: str | Path | None) -> Iterator["RunContext"]:
        """The run, opened and locked against other pipeline processes for a stage's work."""
        context = cls.open(run)
        with rundir.locked(context.run_dir):
            yield context

    @functools.cached_property
    def train_info(self) -> dict:
        from edge_runtime.preprocessing import spec_problems
        from pipeline.core import schemas

        info = schemas.load(self.run_dir / "train.json", schemas.TRAIN_JSON, what="retrain the run")
        found = spec_problems(info["data"]["preprocessing"])
        if found:
            raise RunDirError(f"{self.run_dir / 'train.json'} is damaged ({found[0]}): retrain the run")
        return info

    @property
    def task(self) -> str:
        from pipeline.core.tasks import normalize_task

        return normalize_task(self.train_info.get("task"))

    @property
    def seed(self) -> int:
        return int(self.train_info["config"]["seed"])

    @property
    def preprocessing(self) -> dict:
        return self.train_info["data"]["preprocessing"]

    @functools.cached_property
    def dataset(self):
        """The training data set, reloaded exactly and checked against its recorded hash."""
        from pipeline.data.cache import CACHE_DIR
        from pipeline.data.loaders import load_dataset

        config = self.train_info["config"]
        dataset = load_dataset(config["dataset"], seed=config["seed"],
                               image_size=config.get("image_size"),
                               val_fraction=config.get("val_fraction", 0.1),
                               test_fraction=config.get("test_fraction", 0.2),
                               cache=self.run_dir / CACHE_DIR, write_cache=rundir.holds_lock(self.run_dir),
                               task=self.task)
        # what the model takes, as recorded (an import may declare it: --input-scale/--input-offset)
        dataset.preprocessing = dict(self.preprocessing)
        recorded = self.train_info["data"]["sha256"]
        if dataset.sha256() != recorded:
            raise DataError(f"data set '{config['dataset']}' changed since this run was trained "
                            f"(sha256 {dataset.sha256()[:12]}…, recorded {recorded[:12]}…): "
                            f"retrain or restore the original data")
        return dataset

    def model_path(self, pruned: bool = False) -> Path:
        path = self.run_dir / source_model(pruned)
        if not path.exists():
            raise RunDirError(f"{path} does not exist: run `pipeline prune` first" if pruned
                              else f"{path} does not exist")
        return path

    def load_model(self, pruned: bool = False):
        from pipeline.core.modelio import float32_copy, load_model

        # Code in the model runs only if this invocation said --unsafe: a run directory (its
        # train.json included) is a file like any other and never grants trust.
        return float32_copy(load_model(self.model_path(pruned)))

    @functools.cached_property
    def thresholds(self) -> dict[str, dict]:
        return {}

    def task_output(self, source: Path | str) -> dict:
        """What a device needs beyond class names to read the outputs of a model made from
        ``source``: an autoencoder's anomaly score and threshold (chosen on the validation
        split, normal samples, with that model), under ``anomaly``; nothing for other tasks."""
        if self.task != "reconstruction":
            return {}
        from pipeline.core.tasks import threshold_for
        from pipeline.formats.kinds import PRUNED_MODEL

        name = Path(source).name
        if name not in self.thresholds:
            x_val, _ = self.dataset.split("val")
            outputs = self.load_model(pruned=name == PRUNED_MODEL).predict(x_val, batch_size=256, verbose=0)
            self.thresholds[name] = threshold_for(outputs, x_val)
        return {"anomaly": self.thresholds[name]}

    def calibration(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` training samples drawn with the run's seed: ``(indices, model-ready x)``
        (only those samples are preprocessed)."""
        total = self.dataset.size("train")
        if count <= 0:
            return np.zeros(0, dtype=np.int64), self.dataset.take("train", [])[0]
        count = min(count, total)
        rng = np.random.default_rng(self.seed)
        indices = np.sort(rng.choice(total, size=count, replace=False))
        return indices, self.dataset.take("train", indices)[0]
