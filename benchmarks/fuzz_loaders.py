"""Feed LiteRT and ONNX Runtime mutated and truncated model files; count native crashes.

    python benchmarks/fuzz_loaders.py --tflite M.tflite --onnx M.onnx [--cases 1000] [--seed 0] [--json]

Before: each case loaded and invoked directly by the runtime, in a forked child (a crash
kills only the child). After: the same file through ``edge_runtime.load`` — with its sidecar
(the sha256 check refuses it) and without one (``isolate=True`` probes it in a child) — in
this very process, which must survive every case. Imports no TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    buffer = bytearray(data)
    kind = rng.choice(["bitflip", "overwrite", "truncate", "zero-range"])
    if kind == "bitflip":
        for position in rng.integers(0, len(buffer), size=int(rng.integers(1, 9))):
            buffer[position] ^= 1 << int(rng.integers(0, 8))
    elif kind == "overwrite":
        start = int(rng.integers(0, len(buffer)))
        chunk = rng.integers(0, 256, size=int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        buffer[start:start + len(chunk)] = chunk
    elif kind == "truncate":
        buffer = buffer[:int(rng.integers(0, len(buffer)))]
    else:
        start = int(rng.integers(0, len(buffer)))
        buffer[start:start + int(rng.integers(1, 257))] = bytes(min(256, len(buffer) - start))
    return bytes(buffer), str(kind)


def raw_load_in_child(path: Path) -> str:
    """Load and invoke with the bare runtime in a forked child: 'ran', 'raised' or 'crashed'."""
    pid = os.fork()
    if pid == 0:
        try:
            if path.suffix == ".tflite":
                from ai_edge_litert.interpreter import Interpreter

                interpreter = Interpreter(model_path=str(path))
                interpreter.allocate_tensors()
                detail = interpreter.get_input_details()[0]
                interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
                interpreter.invoke()
            else:
                import onnxruntime

                session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = session.get_inputs()[0]
                shape = [d if isinstance(d, int) else 1 for d in feed.shape]
                dtype = {"tensor(int8)": np.int8, "tensor(uint8)": np.uint8}.get(feed.type, np.float32)
                session.run(None, {feed.name: np.zeros(shape, dtype)})
        except BaseException:  # noqa: BLE001
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "crashed"
    return "ran" if os.WEXITSTATUS(status) == 0 else "raised"


def guarded_load(path: Path) -> str:
    """Through edge_runtime, in this process: 'refused' or 'ran' (this process must survive)."""
    from edge_runtime import EdgeRuntimeError, load

    try:
        runner = load(path, isolate=True)
        runner.predict(np.zeros(runner.input.shape, np.float32))
        return "ran"
    except EdgeRuntimeError:
        return "refused"


def run_cases(sources: list[Path], cases: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    before, after_sidecar, after_isolated = Counter(), Counter(), Counter()
    kinds = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(cases):
            source = sources[index % len(sources)]
            data, kind = mutate(source.read_bytes(), rng)
            kinds[kind] += 1
            case = Path(tmp) / f"case{index}{source.suffix}"
            case.write_bytes(data)
            before[raw_load_in_child(case)] += 1
            after_isolated[guarded_load(case)] += 1
            shutil.copy(source.with_name(source.name + ".json"), case.with_name(case.name + ".json"))
            after_sidecar[guarded_load(case)] += 1
            case.unlink()
            case.with_name(case.name + ".json").unlink()
    return {"cases": cases, "seed": seed, "mutations": dict(kinds),
            "before_bare_runtime": dict(before),
            "after_edge_runtime_with_sidecar": dict(after_sidecar),
            "after_edge_runtime_isolated": dict(after_isolated),
            "native_crashes_before": before["crashed"],
            "native_crashes_after": 0,  # this process is still alive to say so
            "pid": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", type=Path, required=True)
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    result = run_cases([args.tflite, args.onnx], args.cases, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cases']} mutated/truncated files (seed {result['seed']}): {result['mutations']}")
        print(f"bare runtimes: {result['before_bare_runtime']} -> native crashes: {result['native_crashes_before']}")
        print(f"edge_runtime with sidecar: {result['after_edge_runtime_with_sidecar']}")
        print(f"edge_runtime isolated, no sidecar: {result['after_edge_runtime_isolated']}; native crashes "
              f"in this process: {result['native_crashes_after']}")
    sys.exit(0)


if __name__ == "__main__":
    main()
