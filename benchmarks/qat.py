"""Post-training int8 against quantization-aware training, side by side in one run.

    python benchmarks/qat.py [--shared ../shared/data] [--cases digits,mobilenet,cifar] [--qat-epochs N]

Cases: the seed CNN and mobilenet_v1 trained on digits by ``pipeline train``; MLPerf Tiny's
ResNet-8 (``pretrainedResnet.h5``) imported on the 5,482 byte-exact CIFAR-10 training images
and tested on the 1,017 test images (``--val-fraction 0.2``, as ``benchmarks/cifar_recover.py``).
For each: ``pipeline quantize --int8 --qat`` (both artifacts from the same calibration
samples), ``pipeline verify`` and ``pipeline bench`` (interleaved rounds). Prints accuracy with
95% intervals, the QAT − PTQ accuracy difference with its paired interval (same test samples),
agreement of the QAT artifact with its fake-quant model, the agreement of each int8 artifact
with itself under two int8 implementations (XNNPACK and LiteRT's reference kernels: the floor of
any integer-vs-float comparison), size and p50 ratios.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def measure(run_dir: Path, qat_epochs: int, bench_seconds: float) -> dict:
    """Quantize (PTQ and QAT), verify, bench, and the per-sample correctness of both."""
    from edge_runtime import load
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import BenchOptions, QuantizeOptions
    from pipeline.core.errors import ParityError
    from pipeline.core.fsutil import read_json
    from pipeline.core.stats import paired_drop
    from pipeline.data.context import RunContext
    from pipeline.device.bench import bench
    from pipeline.optimizing.quantize import quantize

    started = time.perf_counter()
    quantize(run_dir, QuantizeOptions(modes=["int8"], recover=False, qat=True, qat_epochs=qat_epochs))
    seconds = time.perf_counter() - started
    try:
        verify(run_dir, VerifyOptions())
    except ParityError:
        pass  # recorded in verify.json: the table shows which gate
    rows = {r["artifact"]: r for r in read_json(run_dir / "verify.json")["artifacts"]}
    timed = bench(run_dir, BenchOptions(threads=[1], min_seconds=bench_seconds,
                                        artifacts=["model_int8.tflite", "model_int8_qat.tflite"]))
    p50 = {r["artifact"]: r for r in timed["results"] if r["backend"] == "litert"}
    context = RunContext.open(run_dir)
    raw, y = context.dataset.x_test, context.dataset.y_test
    correct = {name: load(run_dir / name).predict(raw, raw=True).argmax(-1) == y
               for name in ("model_int8.tflite", "model_int8_qat.tflite")}
    difference = paired_drop(correct["model_int8.tflite"], correct["model_int8_qat.tflite"])
    return {"rows": rows, "p50": p50, "qat": read_json(run_dir / "quantize.json")["qat"],
            "quantize_seconds": seconds, "qat_minus_ptq": difference, "test_samples": len(y),
            "kernels_agreement": {name: kernels_agreement(run_dir / name, context)
                                  for name in ("model_int8.tflite", "model_int8_qat.tflite")}}


def kernels_agreement(path: Path, context) -> float:
    """Top-1 agreement of one int8 artifact with itself run by two int8 implementations:
    LiteRT's default CPU path (XNNPACK) and its reference kernels. The floor below which no
    comparison of an integer artifact with a float computation of it can be judged."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from pipeline.data.dataset import split_for_task

    x, _ = split_for_task(context.dataset, "test", context.task)
    answers = []
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_REF):
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        feed, fetch = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = feed["quantization"]
        top1 = []
        for sample in x:
            quantized = np.clip(np.floor(sample[None] / scale + zero + 0.5), -128, 127) if scale else sample[None]
            interpreter.set_tensor(feed["index"], quantized.astype(feed["dtype"]))
            interpreter.invoke()
            top1.append(int(np.argmax(interpreter.get_tensor(fetch["index"])[0])))
        answers.append(np.asarray(top1))
    return float(np.mean(answers[0] == answers[1]))


def digits_case(work: Path, model: str, qat_epochs: int, bench_seconds: float) -> dict:
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    result = train(work / model, TrainOptions(model=model), runs_root=work, verbose=0)
    return measure(result.run_dir, qat_epochs, bench_seconds)


def cifar_case(shared: Path, work: Path, qat_epochs: int, bench_seconds: float) -> dict:
    from pipeline.training.import_model import import_model

    train_set = np.load(shared / "cifar10" / "cifar10_train_partial.npz")
    test_set = np.load(shared / "cifar10" / "cifar10_test_partial.npz")
    data = work / "cifar10.npz"
    np.savez(data, x_train=train_set["x"].astype(np.float32), y_train=train_set["y"],
             x_test=test_set["x"].astype(np.float32), y_test=test_set["y"])
    run_dir, _ = import_model(shared / "mlperf_tiny" / "ic" / "pretrainedResnet.h5", dataset=f"npz:{data}",
                              val_fraction=0.2, out=work / "resnet8", runs_root=work)
    return measure(run_dir, qat_epochs, bench_seconds)


def _interval(ci, signed: bool = False) -> str:
    form = "+.2f" if signed else ".2f"
    return f"[{format(ci[0] * 100, form)}, {format(ci[1] * 100, form)}]" if ci else ""


def lines(name: str, result: dict) -> list[str]:
    rows, p50 = result["rows"], result["p50"]
    ptq, qat = rows["model_int8.tflite"], rows["model_int8_qat.tflite"]
    keras_accuracy = ptq["keras_metric_value"]
    out = [f"{name}: {result['test_samples']} test samples, float (Keras) accuracy {keras_accuracy:.2%}; "
           f"quantize (PTQ + QAT, {result['qat']['epochs_run']} epochs) {result['quantize_seconds']:.0f} s"]
    for label, row in (("PTQ int8", ptq), ("QAT int8", qat)):
        timing = p50.get(row["artifact"], {})
        out.append(f"  {label}: accuracy {row['metric_value']:.2%} {_interval(row.get('accuracy_ci95'))}, "
                   f"drop {row['metric_drop'] * 100:+.2f} pt {_interval(row.get('metric_drop_ci95'), True)}, "
                   f"agreement with float {row['top1_agreement']:.2%}, {row['size_bytes']:,} bytes, "
                   f"p50 {timing.get('p50_ms', float('nan')):.4f} ms (spread {timing.get('p50_spread_ms', 0):.4f}), "
                   f"{'pass' if row['passed'] else 'FAIL'}")
    difference = result["qat_minus_ptq"]
    out.append(f"  QAT - PTQ accuracy: {-difference['drop'] * 100:+.2f} pt, paired 95% interval "
               f"[{-difference['ci95'][1] * 100:+.2f}, {-difference['ci95'][0] * 100:+.2f}]")
    out.append(f"  QAT artifact vs its fake-quant model: agreement {qat['fake_quant_agreement']:.2%} "
               f"{_interval(qat.get('fake_quant_agreement_ci95'))}, largest difference "
               f"{qat['fake_quant']['max_error_lsb']:.0f} output steps")
    floor = result["kernels_agreement"]
    out.append(f"  each int8 artifact run by XNNPACK and by LiteRT's reference kernels agrees with itself on "
               f"PTQ {floor['model_int8.tflite']:.2%}, QAT {floor['model_int8_qat.tflite']:.2%}")
    if ptq["artifact"] in p50 and qat["artifact"] in p50:
        out.append(f"  QAT / PTQ: size {qat['size_bytes'] / ptq['size_bytes']:.3f}, p50 "
                   f"{p50[qat['artifact']]['p50_ms'] / p50[ptq['artifact']]['p50_ms']:.3f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--cases", default="digits,mobilenet,cifar")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--bench-seconds", type=float, default=2.0)
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in cases:
            if case == "cifar":
                if not (args.shared / "cifar10" / "cifar10_train_partial.npz").exists():
                    print(f"cifar: {args.shared}/cifar10 is absent: skipped")
                    continue
                result = cifar_case(args.shared, work, args.qat_epochs, args.bench_seconds)
                name = "MLPerf Tiny ResNet-8, CIFAR-10"
            else:
                model = {"digits": "mnist_cnn", "mobilenet": "mobilenet_v1"}[case]
                result = digits_case(work, model, args.qat_epochs, args.bench_seconds)
                name = f"{model}, digits"
            print("\n".join(lines(name, result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
