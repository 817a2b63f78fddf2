"""Issue targets for pruning, quantization and conversion, measured on the seed CNN + digits.

    python benchmarks/optimize.py [--run RUN_DIR]   (default: trains a fresh run in a temp dir)

Prints: int8 size ratio / accuracy drop / top-1 agreement; float32 TFLite and ONNX max abs
error against Keras on the whole test split; 80% unstructured pruning accuracy drop and gzip
ratio; 50% structured pruning accuracy drop and the int8 latency ratio (unpruned / pruned,
batch 1, one thread, measured alternately in this run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _accuracy(probabilities, labels) -> float:
    import numpy as np

    return float(np.mean(probabilities.argmax(1) == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--latency-rounds", type=int, default=5)
    args = parser.parse_args()
    import keras
    import numpy as np

    from edge_runtime import load
    from edge_runtime.bench import measure
    from pipeline.config.stages import ConvertOptions, PruneOptions, QuantizeOptions, TrainOptions
    from pipeline.data.context import RunContext
    from pipeline.optimizing.convert import convert
    from pipeline.optimizing.prune import prune
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.train import train

    tmp = Path(tempfile.mkdtemp())
    if args.run is None:
        run_dir = train(tmp / "run", TrainOptions(), runs_root=tmp, verbose=0).run_dir
    else:
        run_dir = tmp / "run"
        shutil.copytree(args.run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    context = RunContext(run_dir)
    x_test, y_test = context.dataset.split("test")
    reference = keras.models.load_model(run_dir / "model.keras").predict(x_test, verbose=0)
    keras_accuracy = _accuracy(reference, y_test)
    quantize(run_dir, QuantizeOptions(modes=["int8"]))
    convert(run_dir, ConvertOptions())
    int8 = load(run_dir / "model_int8.tflite").predict(x_test)
    size_ratio = (run_dir / "model_int8.tflite").stat().st_size / (run_dir / "model_float32.tflite").stat().st_size
    print(f"seed CNN on digits: Keras test accuracy {keras_accuracy:.4f} ({len(y_test)} test samples)")
    print(f"int8 TFLite: size {size_ratio:.3f}x float32 (target <= 0.35), accuracy drop "
          f"{(keras_accuracy - _accuracy(int8, y_test)) * 100:.2f} points (target <= 0.5), top-1 "
          f"agreement {np.mean(int8.argmax(1) == reference.argmax(1)) * 100:.2f}% (target >= 99)")
    for name in ("model_float32.tflite", "model_float32.onnx"):
        error = np.abs(load(run_dir / name).predict(x_test) - reference).max()
        print(f"{name}: max abs error vs Keras {error:.2e} over the test split (target <= 1e-5)")

    unstructured = prune(run_dir, PruneOptions(sparsity=0.8))
    print(f"80% unstructured: sparsity {unstructured['after']['sparsity']:.3f}, accuracy drop "
          f"{unstructured['accuracy_drop'] * 100:.2f} points (target <= 1), gzip "
          f"{unstructured['gzip_ratio']:.2f}x smaller (target >= 3)")

    structured = prune(run_dir, PruneOptions(sparsity=0.5, structured=True))
    quantize(run_dir, QuantizeOptions(modes=["int8"], pruned=True))
    pruned_int8 = load(run_dir / "model_pruned_int8.tflite").predict(x_test)
    dense_runner = load(run_dir / "model_int8.tflite", threads=1)
    pruned_runner = load(run_dir / "model_pruned_int8.tflite", threads=1)
    dense_p50, pruned_p50 = [], []
    for _ in range(args.latency_rounds):  # alternate, so drift hits both alike
        dense_p50.append(measure(dense_runner, runs=300, min_seconds=0.5)["p50_ms"])
        pruned_p50.append(measure(pruned_runner, runs=300, min_seconds=0.5)["p50_ms"])
    dense_ms, pruned_ms = statistics.median(dense_p50), statistics.median(pruned_p50)
    print(f"50% structured: params {structured['before']['params']} -> {structured['after']['params']}, "
          f"accuracy drop {structured['accuracy_drop'] * 100:.2f} points (target <= 1.5), "
          f"pruned int8 accuracy {_accuracy(pruned_int8, y_test):.4f}")
    print(f"int8 latency p50 (1 thread, batch 1, median of {args.latency_rounds} alternating rounds): "
          f"unpruned {dense_ms:.4f} ms, pruned {pruned_ms:.4f} ms, speed-up {dense_ms / pruned_ms:.2f}x "
          f"(target >= 1.6)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
