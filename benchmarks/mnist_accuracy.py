"""The seed CNN on the real MNIST test split from ../shared/data (8000 train, 2000 test).

    python benchmarks/mnist_accuracy.py [--idx ../shared/data/mnist] [--epochs 15]

Prints the test accuracy (target ≥ 0.97) and the training time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
DEFAULT_IDX = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx", type=Path, default=DEFAULT_IDX)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.idx.exists():
        sys.exit(f"{args.idx} is absent: pass --idx DIR with the MNIST IDX files")
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    config = TrainOptions(dataset=f"idx:{args.idx}", epochs=args.epochs, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(os.path.join(tmp, "run"), config, runs_root=tmp, verbose=0).metrics
    sizes = metrics["data"]["sizes"]
    print(f"seed CNN on MNIST t10k: train {sizes['train']} + val {sizes['val']}, test {sizes['test']} "
          f"(stratified, seed {args.seed}), {metrics['epochs_run']} epochs")
    print(f"test accuracy {metrics['test_accuracy']:.4f} (target >= 0.97), "
          f"train {metrics['train_seconds']:.1f} s, {metrics['samples_per_second']:.0f} samples/s")


if __name__ == "__main__":
    main()
