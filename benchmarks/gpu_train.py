"""Training throughput: `pipeline train` against a plain `model.fit`, same model, backend,
data and batch, steady state (the median epoch after the first, which holds compilation).

The data are MNIST's t10k images tiled `--tiles` times (6: 60,000 samples) from
../shared/data/mnist. Each side runs in its own process (a Keras backend is fixed per
process), alternating, `--repeats` times; the ratio printed is pipeline samples/s over plain
samples/s (target: >= 0.95 on CPU, >= 0.9 on a GPU under jax). The pipeline's epochs include
its validation pass and checkpoints; plain fit has neither.

    python benchmarks/gpu_train.py                              # small, on this CPU
    python benchmarks/gpu_train.py --backend jax --tiles 6 --model resnet8 --batch 256
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def write_data(mnist: Path, tiles: int, limit: int | None, out: Path) -> Path:
    import numpy as np

    from pipeline.data.idx import read_idx

    x = read_idx(next(mnist.glob("t10k-images*")))[..., None]
    y = read_idx(next(mnist.glob("t10k-labels*"))).astype("int64")
    if limit:
        x, y = x[:limit], y[:limit]
    np.savez(out, x_train=np.concatenate([x] * tiles), y_train=np.concatenate([y] * tiles),
             x_test=x[:1000], y_test=y[:1000])
    return out


def plain(args) -> dict:
    """The anchor: build, compile, fit; nothing else in the epoch. Under TensorFlow it runs
    with op determinism on, as `pipeline train` does (same seed, same weights), unless
    --side plain-nondeterministic measures what that choice costs."""
    import numpy as np

    if args.side == "plain" and args.backend == "tensorflow":
        from pipeline.core.backend import import_keras

        keras = import_keras("tensorflow")  # enables tf.config.experimental.enable_op_determinism
    else:
        import keras

    import models
    from pipeline.data.loaders import load_dataset

    dataset = load_dataset(f"npz:{args.data}", seed=0, image_size=None, val_fraction=0.1,
                           test_fraction=0.2)
    x, y = dataset.split("train")
    keras.utils.set_random_seed(0)
    model = models.build_model(args.model, dataset.input_shape, dataset.num_classes)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(x, y, batch_size=args.batch, epochs=args.epochs, verbose=0, callbacks=[Timer()])
    return {"samples": len(x), "epoch_seconds": seconds,
            "samples_per_second": len(x) / float(np.median(seconds[1:]))}


def pipeline(args) -> dict:
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(Path(tmp) / "run",
                       TrainOptions(model=args.model, dataset=f"npz:{args.data}", epochs=args.epochs,
                                    batch_size=args.batch, optimizer="rmsprop", backend=args.backend),
                       runs_root=tmp, verbose=0)
    metrics = result.metrics
    return {"samples": metrics["data"]["sizes"]["train"], "epoch_seconds": metrics["epoch_seconds"],
            "samples_per_second": metrics["samples_per_second"]}


def run_side(side: str, args, data: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, "--side", side, "--data", str(data), "--model", args.model,
               "--batch", str(args.batch), "--epochs", str(args.epochs), "--backend", args.backend]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--tiles", type=int, default=1, help="6 gives the 60,000 samples of the GPU check")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N t10k images")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--side", choices=("plain", "pipeline", "plain-nondeterministic"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps((pipeline if args.side == "pipeline" else plain)(args)))
        return
    if not args.mnist.is_dir():
        sys.exit(f"{args.mnist} is absent: this benchmark needs MNIST's t10k IDX files")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(args.mnist, args.tiles, args.limit, Path(tmp) / "mnist_tiled.npz")
        sides = ["plain", "pipeline"] + (["plain-nondeterministic"] if args.backend == "tensorflow" else [])
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side in sides:
                results[side].append(run_side(side, args, data))
    rates = {side: statistics.median(r["samples_per_second"] for r in runs) for side, runs in results.items()}
    print(f"{args.model}, backend {args.backend}, batch {args.batch}, {args.epochs} epochs, "
          f"{results['plain'][0]['samples']} training samples, {args.repeats} alternating repeats; "
          f"steady state = median epoch after the first (time.perf_counter)")
    for side, runs in results.items():
        firsts = [round(r["epoch_seconds"][0], 2) for r in runs]
        print(f"{side:22s}: {rates[side]:10,.0f} samples/s steady   first epochs {firsts} s   "
              f"per run {[round(r['samples_per_second']) for r in runs]}")
    print(f"ratio pipeline/plain = {rates['pipeline'] / rates['plain']:.3f} "
          f"(target >= 0.95 on CPU, >= 0.9 on a GPU under jax)")
    if "plain-nondeterministic" in rates:
        print(f"cost of TensorFlow op determinism (plain deterministic / plain default) = "
              f"{rates['plain'] / rates['plain-nondeterministic']:.3f}")


if __name__ == "__main__":
    main()
