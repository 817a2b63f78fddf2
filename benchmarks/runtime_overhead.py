"""`edge-runtime bench` against a bare `interpreter.invoke()` loop, same model, same run.

    python benchmarks/runtime_overhead.py MODEL.tflite [--rounds 7] [--runs 2000] [--threads 1]

Both use their own LiteRT interpreter with the same thread count and XNNPACK setting; the
bare loop times only `invoke()` (input set once), edge-runtime times set+invoke+get per call.
Rounds alternate; the ratio of median p50s is printed (target <= 1.05).
Without MODEL it trains the seed CNN on digits and quantizes it to int8 first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def bare_invoke_p50(path: Path, threads: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    for _ in range(50):
        interpreter.invoke()
    timings = np.empty(runs, dtype=np.int64)
    clock, invoke = time.perf_counter_ns, interpreter.invoke
    for i in range(runs):
        begin = clock()
        invoke()
        timings[i] = clock() - begin
    return float(np.percentile(timings / 1e6, 50))


def signature_runner_p50(path: Path, threads: int, runs: int) -> float | None:
    """LiteRT's own SignatureRunner call (it resizes and allocates on every call), for scale."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    listed = interpreter.get_signature_list().get("serving_default")
    if not listed:
        return None
    runner = interpreter.get_signature_runner("serving_default")
    detail = runner.get_input_details()[listed["inputs"][0]]
    feed = {listed["inputs"][0]: np.zeros(detail["shape"], dtype=detail["dtype"])}
    for _ in range(50):
        runner(**feed)
    timings = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        begin = clock()
        runner(**feed)
        timings[i] = clock() - begin
    return float(np.percentile(timings / 1e6, 50))


def edge_runtime_p50(path: Path, threads: int, runs: int) -> float:
    from edge_runtime import load
    from edge_runtime.bench import measure

    runner = load(path, threads=threads)
    sample = np.zeros(runner.input.shape[1:], dtype=np.float32)
    return measure(runner, sample=sample, warmup=50, runs=runs, min_seconds=0)["p50_ms"]


def seed_int8_model(workdir: Path) -> Path:
    from pipeline.config.stages import QuantizeOptions, TrainOptions
    from pipeline.optimizing.quantize import quantize
    from pipeline.training.train import train

    run_dir = train(workdir / "run", TrainOptions(), runs_root=workdir, verbose=0).run_dir
    quantize(run_dir, QuantizeOptions(modes=["int8"]))
    return run_dir / "model_int8.tflite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or seed_int8_model(Path(tmp))
        bare, ours, signature = [], [], []
        for _ in range(args.rounds):
            bare.append(bare_invoke_p50(model, args.threads, args.runs))
            ours.append(edge_runtime_p50(model, args.threads, args.runs))
            signature.append(signature_runner_p50(model, args.threads, args.runs))
    bare_ms, ours_ms = statistics.median(bare), statistics.median(ours)
    print(f"{model.name}: batch 1, {args.threads} thread(s), {args.rounds} alternating rounds of "
          f"{args.runs} timed calls (time.perf_counter_ns), median of per-round p50")
    print(f"bare interpreter.invoke() p50 {bare_ms * 1000:.1f} us, edge-runtime bench p50 "
          f"{ours_ms * 1000:.1f} us, ratio {ours_ms / bare_ms:.3f} (target <= 1.05)")
    if None not in signature:  # edge-runtime addresses the signature's tensors, not this runner
        signature_ms = statistics.median(signature)
        print(f"LiteRT SignatureRunner call p50 {signature_ms * 1000:.1f} us, ratio {signature_ms / bare_ms:.3f} "
              f"(its resize and allocation on every call)")


if __name__ == "__main__":
    main()
