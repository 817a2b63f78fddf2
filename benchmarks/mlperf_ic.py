"""MLPerf Tiny image classification: our int8 ResNet-8 against the reference int8 model.

    python benchmarks/mlperf_ic.py [--ic ../shared/data/mlperf_tiny/ic]

Imports the reference Keras 2 ``pretrainedResnet.h5`` into a run, quantizes it with
``pipeline quantize --int8`` and scores it, the float model and the reference
``pretrainedResnet_quant.tflite`` on the 200 ic01 samples. No CIFAR-10 training data is
available offline, so calibration is two-fold: each half of ic01 calibrates the model that
scores the other half.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
DEFAULT_IC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlperf_tiny" / "ic"


def load_ic01(ic_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 200 ic01 samples as raw uint8 HWC images and their labels."""
    images, labels = [], []
    with open(ic_dir / "ic01" / "y_labels.csv", newline="") as fh:
        for row in csv.reader(fh):
            if not row or not row[0].endswith(".bin"):
                continue
            raw = np.fromfile(ic_dir / "ic01" / row[0], dtype=np.uint8)
            images.append(raw.reshape(32, 32, 3))
            labels.append(int(row[2]))
    return np.stack(images), np.array(labels)


def score_ic(ic_dir: Path, workdir: Path) -> dict[str, float]:
    """Two-fold: each half of ic01 is scored by an int8 model calibrated on the other half,
    so no sample calibrates the model that scores it."""
    from edge_runtime import load
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.import_model import import_model

    images, labels = load_ic01(ic_dir)
    floats = images.astype(np.float32)  # the float model takes raw 0..255 values
    halves = np.array_split(np.random.default_rng(0).permutation(len(labels)), 2)
    ours = np.zeros((len(labels), 10), dtype=np.float32)
    float_correct = 0
    for fold, (calibrate, score) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        npz = workdir / f"ic01_fold{fold}.npz"
        np.savez(npz, x_train=floats[calibrate], y_train=labels[calibrate],
                 x_test=floats[score], y_test=labels[score])
        run_dir, metrics = import_model(ic_dir / "pretrainedResnet.h5", dataset=f"npz:{npz}",
                                 val_fraction=0.0, out=workdir / f"run{fold}", runs_root=workdir)
        float_correct += metrics["test_accuracy"] * len(score)
        quantize(run_dir, QuantizeOptions(modes=["int8"], calibration_samples=len(calibrate)))
        ours[score] = load(run_dir / "model_int8.tflite").predict(floats[score])
    reference = load(ic_dir / "pretrainedResnet_quant.tflite").predict(floats)
    return {"float_h5": float_correct / len(labels),
            "ours_int8": float(np.mean(ours.argmax(1) == labels)),
            "reference_int8": float(np.mean(reference.argmax(1) == labels))}


def verify_ic(ic_dir: Path, workdir: Path) -> dict:
    """`pipeline verify` of our int8 model and the reference int8 model against the .h5 on all
    200 ic01 samples (here our int8 model is calibrated on the same 200)."""
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.import_model import import_model

    images, labels = load_ic01(ic_dir)
    floats = images.astype(np.float32)
    npz = workdir / "ic01_all.npz"
    np.savez(npz, x_train=floats, y_train=labels, x_test=floats, y_test=labels)
    run_dir, _ = import_model(ic_dir / "pretrainedResnet.h5", dataset=f"npz:{npz}", val_fraction=0.0,
                       out=workdir / "verify-run", runs_root=workdir)
    quantize(run_dir, QuantizeOptions(modes=["int8"], calibration_samples=200))
    report = verify(run_dir, VerifyOptions(
        artifacts=["model_int8.tflite", str(ic_dir / "pretrainedResnet_quant.tflite")],
        gates={"quantized": {"metric_drop": 1.0, "top1_agreement": 0.0}}))
    return report


def ic_dir_from_arguments(description: str) -> Path:
    """The ``--ic`` directory of a benchmark's command line; exits when it is absent."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ic", type=Path, default=DEFAULT_IC)
    ic = parser.parse_args().ic
    if not ic.exists():
        sys.exit(f"{ic} is absent: pass --ic DIR")
    return ic


def main() -> None:
    ic = ic_dir_from_arguments(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory() as tmp:
        scores = score_ic(ic, Path(tmp))
        report = verify_ic(ic, Path(tmp))
    print("MLPerf Tiny IC, 200 ic01 samples (two-fold calibration: 100 samples, never the scored ones)")
    print(f"float .h5 {scores['float_h5']:.4f}, our int8 {scores['ours_int8']:.4f}, reference int8 "
          f"{scores['reference_int8']:.4f}, difference "
          f"{(scores['ours_int8'] - scores['reference_int8']) * 100:+.1f} points (target within 1)")
    keras_accuracy = next(iter(report["keras"].values()))
    print(f"pipeline verify on all 200 ic01 samples: Keras (.h5) {keras_accuracy:.4f}")
    for row in report["artifacts"]:
        print(f"  {row['artifact']}: accuracy {row['metric_value']:.4f}, top-1 agreement with the .h5 "
              f"{row['top1_agreement']:.4f}, SQNR {row['sqnr_db']:.1f} dB")


if __name__ == "__main__":
    main()

