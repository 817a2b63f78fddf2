"""`pipeline train` against a plain `model.fit` of the same model, data and epochs.

Both run in this process, alternating, `--repeats` times each; the ratio of the median
wall times (pipeline / plain) is printed. Target: ≤ 1.05.

    python benchmarks/train_overhead.py [--epochs 15] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def plain_fit(config) -> float:
    """The Keras tutorial way: build, compile, fit with validation, evaluate, save."""
    import keras

    import models
    from pipeline.data.loaders import load_dataset

    started = time.perf_counter()
    dataset = load_dataset(config.dataset, seed=config.seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        dataset.split("train"), dataset.split("val"), dataset.split("test"))
    keras.utils.set_random_seed(config.seed)
    model = models.build_model(config.model, dataset.input_shape, dataset.num_classes)
    steps = -(-len(x_train) // config.batch_size) * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.RMSprop(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
              validation_data=(x_val, y_val), verbose=0)
    model.evaluate(x_test, y_test, verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "model.keras"))
    return time.perf_counter() - started


def pipeline_train(config) -> float:
    from pipeline.training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train(os.path.join(tmp, "run"), config, runs_root=tmp, verbose=0)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from pipeline.config.stages import TrainOptions

    config = TrainOptions(epochs=args.epochs)
    pipeline_train(TrainOptions(epochs=1))  # warm-up: imports, graph tracing caches
    plain_times, pipeline_times = [], []
    for _ in range(args.repeats):
        plain_times.append(plain_fit(config))
        pipeline_times.append(pipeline_train(config))
    plain, ours = statistics.median(plain_times), statistics.median(pipeline_times)
    print(f"model {config.model}, data {config.dataset}, {config.epochs} epochs, "
          f"{args.repeats} alternating repeats, wall time medians (time.perf_counter)")
    print(f"plain model.fit : {plain:.2f} s  {[round(t, 2) for t in plain_times]}")
    print(f"pipeline train  : {ours:.2f} s  {[round(t, 2) for t in pipeline_times]}")
    print(f"ratio pipeline/plain = {ours / plain:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
