"""`quantize --calibration` measured: each method (minmax, percentile, mse) and `auto` at
several numbers of calibration samples, on one trained run, static int8 by LiteRT Quantizer.

For each: top-1 agreement with Keras on the validation split (what `auto` chooses by) and on
the test split, test accuracy with its Wilson interval, and the paired test-accuracy difference
against minmax at the same samples (same images). `auto` runs the pipeline's own choice
(pipeline.optimizing.calibration_choice) and says which method it kept.

    python benchmarks/calibration_methods.py                       # trains the seed CNN on digits
    python benchmarks/calibration_methods.py --run runs/latest --samples 100,300,1000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train the seed CNN on digits)")
    parser.add_argument("--samples", default="100,300,1000", help="calibration sample counts, comma-separated")
    parser.add_argument("--mode", default="int8", choices=["int8", "int16x8"])
    args = parser.parse_args()
    from pipeline.core.backend import import_keras

    import_keras()
    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        run_dir = args.run or _train(Path(tmp))
        compare(run_dir, [int(n) for n in args.samples.split(",")], args.mode)


def _train(tmp: Path) -> Path:
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    return train(tmp / "run", TrainOptions(), runs_root=tmp, verbose=0).run_dir


def _predict(content: bytes, x: np.ndarray) -> np.ndarray:
    from edge_runtime import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(content)
        return load(path).predict(x).reshape(len(x), -1).argmax(-1)


def compare(run_dir: Path, counts: list[int], mode: str) -> None:
    from pipeline.core.stats import paired_drop, wilson
    from pipeline.data.context import RunContext
    from pipeline.formats.calibration import METHODS
    from pipeline.formats.litert_quantizer import quantize_with_recipe
    from pipeline.formats.tflite import float_tflite_with_signature
    from pipeline.optimizing.calibration_choice import choose

    context = RunContext.open(run_dir)
    if context.task != "classifier":
        raise SystemExit("this benchmark reads top-1 classes: give it a classifier's run")
    model = context.load_model()
    x_val, _ = context.dataset.split("val")
    x_test, y_test = context.dataset.split("test")
    keras_val = model.predict(x_val, batch_size=256, verbose=0).argmax(-1)
    keras_test = model.predict(x_test, batch_size=256, verbose=0).argmax(-1)
    float_model = float_tflite_with_signature(model)
    keras_right = keras_test == y_test
    print(f"{context.train_info.get('model')} on {context.train_info['data']['name']}: {mode}, "
          f"{len(x_val)} validation and {len(y_test)} test samples; Keras test accuracy "
          f"{keras_right.mean():.2%}")
    print(f"{'samples':>7s} {'method':15s} {'val agree':>9s} {'test agree':>10s} {'test accuracy [95%]':>26s}"
          f"  {'vs minmax, paired [95%]':>30s}")
    for count in counts:
        _, calibration = context.calibration(count)
        right = {}
        for method in (*METHODS, "auto"):
            if method == "auto":
                content, record = choose(model, float_model, mode, calibration, x_val, context.task)
                label = f"auto={record['method']}"
            else:
                content, label = quantize_with_recipe(float_model, mode, calibration, method=method), method
            val_top1, test_top1 = _predict(content, x_val), _predict(content, x_test)
            right[method] = test_top1 == y_test
            low, high = wilson(int(right[method].sum()), len(y_test))
            versus = ""
            if method != "minmax":
                drop = paired_drop(right["minmax"], right[method])
                versus = (f"{-drop['drop'] * 100 + 0.0:+.2f} pt [{-drop['ci95'][1] * 100 + 0.0:+.2f}, "
                          f"{-drop['ci95'][0] * 100 + 0.0:+.2f}] ({drop['lost']} lost, {drop['gained']} gained)")
            print(f"{len(calibration):7d} {label:15s} {np.mean(val_top1 == keras_val):9.2%} "
                  f"{np.mean(test_top1 == keras_test):10.2%} {right[method].mean():8.2%} [{low:.2%}, {high:.2%}]"
                  f"  {versus}")


if __name__ == "__main__":
    main()
