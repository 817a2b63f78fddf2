"""The run's splits as a fine-tuning stage reads them (pruning's and quantization-aware
training's): in memory for a small data set, streamed batch by batch from the raw split where the
run's training streamed, so memory does not grow with the data."""
from __future__ import annotations

import numpy as np


def fine_tuning_splits(keras, context):
    """The run's splits as fine-tuning reads them: in memory, or streamed from the raw split
    where the run's training streamed (``train.stream``), so memory does not grow with the data."""
    from pipeline.data.streaming import STREAM_MODES, streams_split

    mode = (context.train_info.get("config") or {}).get("stream")
    if streams_split(mode if mode in STREAM_MODES else "auto", context.dataset):
        return StreamedSplits(keras, context.dataset, context.task, context.seed)
    return InMemorySplits(context.dataset, context.task)


class InMemorySplits:
    """Every split preprocessed whole, as float32 (a small data set)."""

    def __init__(self, dataset, task: str):
        from pipeline.data.dataset import split_for_task

        self.dataset = dataset
        self.train, self.val, self.test = (split_for_task(dataset, split, task) for split in ("train", "val", "test"))
        self.num_train, self.recalibration = len(self.train[0]), self.train[0]

    @property
    def has_val(self) -> bool:
        return len(self.val[0]) > 0

    def fit(self, model, batch_size: int, epochs: int, callbacks, initial_epoch: int = 0) -> None:
        model.fit(*self.train, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                  validation_data=self.val if len(self.val[0]) else None, verbose=0, callbacks=callbacks)

    def val_loss(self, model) -> float:
        return float(model.evaluate(*self.val, batch_size=256, verbose=0, return_dict=True)["loss"])

    def test_metric(self, model, task: str) -> tuple[float | None, float | None]:
        """(accuracy, reconstruction MSE) on the test split, the one that applies."""
        predictions = model.predict(self.test[0], batch_size=256, verbose=0)
        if task == "classifier":
            return float(np.mean(predictions.argmax(-1) == self.test[1])), None
        return None, float(np.mean((predictions - self.test[1]) ** 2))


class StreamedSplits:
    """The splits read batch by batch from the raw (memory-mapped) split, preprocessed per
    batch, as streamed training reads them; BatchNorm re-estimation takes its seeded samples."""

    def __init__(self, keras, dataset, task: str, seed: int):
        from pipeline.core.batchnorm import MAX_SAMPLES
        from pipeline.data.streaming import Samples

        self.keras, self.dataset, self.task, self.seed = keras, dataset, task, seed
        self.num_train = dataset.size("train")
        self.recalibration = Samples(dataset, "train", dataset.sample_indices("train", MAX_SAMPLES, seed))

    @property
    def has_val(self) -> bool:
        return self.dataset.size("val") > 0

    def fit(self, model, batch_size: int, epochs: int, callbacks, initial_epoch: int = 0) -> None:
        from pipeline.data.streaming import streamed_input

        train = streamed_input(self.keras, self.dataset, "train", None, batch_size, task=self.task,
                               shuffle_seed=self.seed)
        val = (streamed_input(self.keras, self.dataset, "val", None, 256, task=self.task)
               if self.has_val else None)
        model.fit(train, epochs=epochs, initial_epoch=initial_epoch, validation_data=val, verbose=0,
                  callbacks=callbacks, shuffle=False)  # the input shuffles itself, seeded

    def val_loss(self, model) -> float:
        from pipeline.data.streaming import streamed_input

        val = streamed_input(self.keras, self.dataset, "val", None, 256, task=self.task)
        return float(model.evaluate(val, verbose=0, return_dict=True)["loss"])

    def test_metric(self, model, task: str) -> tuple[float | None, float | None]:
        from pipeline.data.dataset import release
        from pipeline.data.streaming import predict_split

        predictions = predict_split(model, self.dataset, "test")
        if task == "classifier":
            return float(np.mean(predictions.argmax(-1) == np.asarray(self.dataset.y_test))), None
        squared = sum(float(np.sum((predictions[start:start + len(x)].astype(np.float64) - x) ** 2))
                      for start, (x, _) in zip(range(0, len(predictions), 1024), self.dataset.chunks("test", 1024)))
        release(self.dataset.x_test)
        return None, squared / predictions.size
