"""MLPerf Tiny reference models on TensorFlow Lite for Microcontrollers: same answers as
LiteRT, and the RAM (tensor arena) and flash they need.

    python benchmarks/mlperf_micro.py [--data ../shared/data/mlperf_tiny] [--out DIR]

ResNet-8 (image classification) goes the user's way: ``pipeline import`` of the reference
``.h5`` on the 200 ic01 samples, then ``pipeline verify`` of the reference int8 model, then
``pipeline report`` (kept in --out). KWS DS-CNN (keyword spotting) has no Keras model the
pipeline can import, so its reference int8 model runs through the same TFLM check directly
on the 1,000 kws01 samples.
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
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlperf_tiny"


def load_kws01(kws_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 kws01 samples as the model's float input ((q - 83) * 0.584703) and labels."""
    features, labels = [], []
    with open(kws_dir / "kws01" / "y_labels.csv", newline="") as fh:
        for row in csv.reader(fh):
            if row and row[0].endswith(".bin"):
                q = np.fromfile(kws_dir / "kws01" / row[0], dtype=np.int8).astype(np.float32)
                features.append(((q - 83) * np.float32(0.584703)).reshape(49, 10, 1))
                labels.append(int(row[2]))
    return np.stack(features), np.array(labels)


def kws_micro(kws_dir: Path) -> dict:
    from edge_runtime import load
    from pipeline.formats.micro import micro_parity

    model = kws_dir / "kws_ref_model.tflite"
    x, y = load_kws01(kws_dir)
    verified = load(model).predict(x)
    return micro_parity(model, x, y, verified, "classifier")


def ic_micro(ic_dir: Path, out: Path) -> dict:
    """Import the .h5, verify the reference int8 model (TFLM included), build the report."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mlperf_ic import load_ic01

    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.running.report import build_report
    from pipeline.training.import_model import import_model

    images, labels = load_ic01(ic_dir)
    floats = images.astype(np.float32)  # the float model takes raw 0..255 values
    npz = out / "ic01.npz"
    np.savez(npz, x_train=floats, y_train=labels, x_test=floats, y_test=labels)
    run_dir, _ = import_model(ic_dir / "pretrainedResnet.h5", dataset=f"npz:{npz}", val_fraction=0.0,
                              out=out / "resnet8", runs_root=out)
    report = verify(run_dir, VerifyOptions(artifacts=[str(ic_dir / "pretrainedResnet_quant.tflite")],
                                           gates={"quantized": {"metric_drop": 1.0, "top1_agreement": 0.0}}))
    build_report(run_dir)
    return {**report["artifacts"][0]["micro"], "report": str(run_dir / "report.md")}


def _line(name: str, micro: dict) -> str:
    return (f"{name:10s} {micro['samples']:5d} samples: TFLM accuracy {micro['accuracy']:.4f}; top-1 "
            f"agreement with LiteRT reference kernels {micro['top1_agreement']:.4f}, with XNNPACK "
            f"{micro['top1_agreement_xnnpack']:.4f}; largest int8 difference {micro['max_output_difference']:g}; "
            f"arena {micro['arena_bytes']:,} B (recorded {micro['recorded_arena_bytes']:,}), "
            f"flash {micro['flash_bytes']:,} B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="keep the ResNet-8 run and report here")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} is absent: pass --data DIR")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        ic = ic_micro(args.data / "ic", out)
        kws = kws_micro(args.data / "kws")
        print(_line("ResNet-8", ic))
        print(_line("DS-CNN", kws))
        print(f"report: {ic['report']}" if args.out else "(pass --out DIR to keep the ResNet-8 report)")


if __name__ == "__main__":
    main()
