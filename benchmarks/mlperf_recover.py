"""Int8 recovery on MLPerf Tiny ResNet-8: the issue's real case, measured the user's way.

    python benchmarks/mlperf_recover.py [--ic ../shared/data/mlperf_tiny/ic]

No CIFAR-10 beyond the 200 ic01 images is available offline, so each fold gives 100 of them
to the run's training split (halved into 50 for calibration and 50 for validation, on which
recovery scores its tries) and tests on the other 100, which the search never sees. Per fold:
``pipeline import`` (``--val-fraction 0.5``), ``quantize --int8 --recover`` (plus float32 for
the size comparison), ``verify`` on the test split, and ``bench`` of float32, int8 and the mix.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlperf_ic import ic_dir_from_arguments, load_ic01  # noqa: E402


def fold(ic_dir: Path, train: np.ndarray, test: np.ndarray, work: Path) -> dict:
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import BenchOptions, QuantizeOptions
    from pipeline.core.errors import ParityError
    from pipeline.core.fsutil import read_json
    from pipeline.device.bench import bench
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.import_model import import_model

    images, labels = load_ic01(ic_dir)
    x = images.astype(np.float32)  # the float model takes raw 0..255 values
    np.savez(work / "ic01.npz", x_train=x[train], y_train=labels[train], x_test=x[test], y_test=labels[test])
    run_dir, _ = import_model(ic_dir / "pretrainedResnet.h5", dataset=f"npz:{work / 'ic01.npz'}",
                              val_fraction=0.5, out=work / "run", runs_root=work)
    report = quantize(run_dir, QuantizeOptions(modes=["float32", "int8"], calibration_samples=100))
    try:
        verify(run_dir, VerifyOptions())
    except ParityError:
        pass  # the table below says which failed
    rows = {r["artifact"]: r for r in read_json(run_dir / "verify.json")["artifacts"]}
    timed = bench(run_dir, BenchOptions(runs=200, min_seconds=1.0))
    p50 = {r["artifact"]: r["p50_ms"] for r in timed["results"] if r["backend"] == "litert"}
    return {"recovery": report["recovery"], "rows": rows, "p50": p50}


def main() -> None:
    ic = ic_dir_from_arguments(__doc__.splitlines()[0])
    even, odd = np.arange(0, 200, 2), np.arange(1, 200, 2)
    for name, (train, test) in (("fold A", (even, odd)), ("fold B", (odd, even))):
        with tempfile.TemporaryDirectory() as tmp:
            result = fold(ic, train, test, Path(tmp))
        recovery, rows, p50 = result["recovery"], result["rows"], result["p50"]
        raised = ", ".join(f"{layer['op']} ({layer['precision']})" for layer in recovery.get("raised", []))
        print(f"{name}: recovery {recovery['status']}; validation agreement of full int8 "
              f"{recovery['full_int8']['top1_agreement']:.2%} (50 images); raised: {raised or 'none'} "
              f"of {recovery.get('raisable_layers', '?')} layers; {recovery.get('tries', 0)} tries")
        for artifact in ("model_float32.tflite", "model_int8.tflite", "model_int8_mixed.tflite"):
            row = rows.get(artifact)
            if row:
                print(f"  {artifact:26s} test (100 images): accuracy {row['metric_value']:.2f}, agreement "
                      f"{row['top1_agreement']:.2f}, gates {'pass' if row['passed'] else 'FAIL'}; "
                      f"{row['size_bytes'] / 1024:.1f} KiB, p50 {p50.get(artifact, float('nan')):.3f} ms")


if __name__ == "__main__":
    main()
