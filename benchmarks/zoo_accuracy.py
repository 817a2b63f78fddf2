"""Test accuracy of the zoo's slowest classifiers with their full default recipes on digits,
with 95% Wilson intervals, against the floors the suite once asserted (moved here: a minute
or more each on 2 cores; tests/training/test_zoo_accuracy.py keeps the fast models and a short resnet8).

    python benchmarks/zoo_accuracy.py [--models resnet8,ds_cnn,mobilenet_v1,lenet5,lstm,gru] [--seed 0]

Exits 1 if a model's accuracy is under its floor.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# model: (floor, measured on digits with seed 0 when the floor was set)
FLOORS = {
    "resnet8": (0.97, 0.9944),       # margin 8 images of 360
    "ds_cnn": (0.97, 0.9972),        # margin 9 images
    "mobilenet_v1": (0.70, 0.8361),  # margin 49 images (0.775 before its Adam recipe)
    "lenet5": (0.95, 0.9667),        # margin 6 images (30-epoch recipe; 0.9583 with 15)
    "lstm": (0.85, 0.9417),          # margin 33 images (Adam recipe; 0.831 on the common one)
    "gru": (0.85, 0.9278),           # margin 28 images (Adam recipe; 0.633 on the common one)
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(FLOORS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from pipeline.config.stages import TrainOptions
    from pipeline.core.stats import wilson
    from pipeline.training.train import train

    failed = False
    print(f"{'model':14s} {'test acc.':>9s} {'95% interval':>17s} {'floor':>6s} {'seconds':>8s}")
    for name in args.models.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(Path(tmp) / name, TrainOptions(model=name, seed=args.seed), runs_root=tmp, verbose=0)
        accuracy, n = result.metrics["test_accuracy"], result.metrics.get("test_samples", 360)
        low, high = wilson(round(accuracy * n), n)
        floor = FLOORS.get(name, (0.0, None))[0]
        failed |= accuracy < floor or result.metrics["collapsed"]
        print(f"{name:14s} {accuracy:9.2%} [{low:6.2%}, {high:6.2%}] {floor:6.2f} {time.perf_counter() - started:8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
