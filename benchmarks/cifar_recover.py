"""Int8 recovery on real CIFAR-10: MLPerf Tiny's ResNet-8, validated on one split, tested on
images the recovery never saw.

    python benchmarks/cifar_recover.py [--shared ../shared/data] [--train N] [--test N]

The user's way: ``pipeline import pretrainedResnet.h5`` with an npz of the 5,482 byte-exact
CIFAR-10 training images and the 1,017 test images (raw 0..255 as float32, the model's
input), ``--val-fraction 0.2``; ``pipeline quantize --float32 --int8 --recover``;
``pipeline verify`` on the test images; ``pipeline bench`` of float32, int8 and the mix.
Prints, for the full int8 and the mix, validation and test figures with 95% intervals, the
gate verdicts, size and p50 ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_case(shared: Path, work: Path, train: int | None = None, test: int | None = None,
             bench_seconds: float = 1.5) -> dict:
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import BenchOptions, QuantizeOptions
    from pipeline.core.errors import ParityError
    from pipeline.core.fsutil import read_json
    from pipeline.device.bench import bench
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.import_model import import_model

    train_set = np.load(shared / "cifar10" / "cifar10_train_partial.npz")
    test_set = np.load(shared / "cifar10" / "cifar10_test_partial.npz")
    data = work / "cifar10.npz"
    np.savez(data, x_train=train_set["x"][:train].astype(np.float32), y_train=train_set["y"][:train],
             x_test=test_set["x"][:test].astype(np.float32), y_test=test_set["y"][:test])
    run_dir, _ = import_model(shared / "mlperf_tiny" / "ic" / "pretrainedResnet.h5", dataset=f"npz:{data}",
                              val_fraction=0.2, out=work / "run", runs_root=work)
    started = time.perf_counter()
    refused = None
    try:
        quantize(run_dir, QuantizeOptions(modes=["float32", "int8"], recover=True))
    except ParityError as exc:
        refused = str(exc)
    recovery = read_json(run_dir / "quantize.json")["recovery"] if (run_dir / "quantize.json").exists() else None
    if refused:  # the float32 and int8 artifacts were written before recovery refused
        recovery = {"status": "refused", "message": refused}
    quantize_seconds = time.perf_counter() - started
    try:
        verify(run_dir, VerifyOptions())
    except ParityError:
        pass
    rows = {r["artifact"]: r for r in read_json(run_dir / "verify.json")["artifacts"]}
    timed = bench(run_dir, BenchOptions(threads=[1], runs=200 if bench_seconds else 20, min_seconds=bench_seconds))
    p50 = {r["artifact"]: r for r in timed["results"] if r["backend"] == "litert"}
    return {"recovery": recovery, "rows": rows, "p50": p50, "quantize_seconds": quantize_seconds,
            "test_samples": read_json(run_dir / "verify.json")["test_samples"]}


def _interval(ci, scale=100.0, signed=False) -> str:
    form = "+.2f" if signed else ".2f"
    return f"[{format(ci[0] * scale, form)}, {format(ci[1] * scale, form)}]" if ci else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--train", type=int, default=None, help="the first N training images (all 5,482)")
    parser.add_argument("--test", type=int, default=None, help="the first N test images (all 1,017)")
    args = parser.parse_args()
    if not (args.shared / "cifar10" / "cifar10_train_partial.npz").exists():
        print(f"{args.shared}/cifar10 is absent: nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        result = run_case(args.shared, Path(tmp), args.train, args.test)
    print("\n".join(lines(result)))
    return 0


def lines(result: dict) -> list[str]:
    """What the benchmark prints: the recovery, then the test table with intervals."""
    out: list[str] = []
    recovery, rows, p50 = result["recovery"], result["rows"], result["p50"]
    out.append(f"recovery: {recovery.get('status')} ({result['quantize_seconds']:.0f} s for quantize)")
    if recovery.get("message"):
        out.append(f"  {recovery['message']}")
    full = recovery.get("full_int8") or {}
    if full:
        out.append(f"  validation ({recovery.get('validation_samples')} images): full int8 agreement "
              f"{full['top1_agreement']:.2%}, drop {full['metric_drop'] * 100:.2f} pt")
    if recovery.get("validation"):
        mix = recovery["validation"]
        raised = ", ".join(f"{r['op']} ({r['precision']})" for r in recovery.get("raised", []))
        out.append(f"  validation: mix agreement {mix['top1_agreement']:.2%}, drop {mix['metric_drop'] * 100:.2f} pt; "
              f"raised {raised} of {recovery.get('raisable_layers')} layers; {recovery.get('tries')} tries")
    out.append(f"test ({result['test_samples']} images, never seen by recovery):")
    out.append(f"{'artifact':26s} {'accuracy':>8s} {'95% interval':>16s} {'agree':>7s} {'95% interval':>16s} "
          f"{'drop pt':>7s} {'95% interval':>16s} {'gates':>6s} {'KiB':>7s} {'p50 ms':>7s}")
    for name in ("model_float32.tflite", "model_int8.tflite", "model_int8_mixed.tflite"):
        row = rows.get(name)
        if not row:
            continue
        verdicts = ",".join(f"{g}:{v['verdict']}" for g, v in row["gates"].items()
                            if g in ("metric_drop", "top1_agreement"))
        out.append(f"{name:26s} {row['metric_value']:8.2%} {_interval(row.get('accuracy_ci95')):>16s} "
              f"{row['top1_agreement']:7.2%} {_interval(row.get('top1_agreement_ci95')):>16s} "
              f"{row['metric_drop'] * 100:7.2f} {_interval(row.get('metric_drop_ci95'), signed=True):>16s} "
              f"{'pass' if row['passed'] else 'FAIL':>6s} {row['size_bytes'] / 1024:7.1f} "
              f"{p50[name]['p50_ms'] if name in p50 else float('nan'):7.3f}  {verdicts}")
    if "model_int8_mixed.tflite" in rows and "model_int8.tflite" in p50:
        mix, full_row = rows["model_int8_mixed.tflite"], rows["model_int8.tflite"]
        out.append(f"mix / float32 size: {mix['size_bytes'] / rows['model_float32.tflite']['size_bytes']:.2f}; "
              f"mix / int8 p50: {p50['model_int8_mixed.tflite']['p50_ms'] / p50['model_int8.tflite']['p50_ms']:.2f}"
              f" (int8 {full_row['size_bytes'] / 1024:.1f} KiB)")
    return out


if __name__ == "__main__":
    sys.exit(main())
