"""TensorFlow Lite for Microcontrollers (TFLM) on the workstation: does an integer TFLite model
give the same answers on TFLM's reference kernels, and how large a tensor arena does it need?

TFLM is a C++ library that trusts its model: a corrupt file, an unsupported op or an arena
that is much too small can crash the process (a segfault, not an exception). So every TFLM
call runs in a child process (``python -m pipeline.formats.micro``), and the arena search probes each
size in a forked grandchild: the caller sees a result or one error, never a crash.

The arena is measured, not estimated: the smallest size (to the byte) with which the model
allocates and runs, found by bisection below what TFLM's RecordingMicroAllocator reports.
Flash is the model itself: the bytes of the C array a board stores (code size depends on the
target's compiler and op resolver and is not counted).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError

# Modes TFLM runs: integer models (its float kernels are a reference, not a target).
_RECORDED = re.compile(r"Arena allocation total (\d+) bytes")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")
# A generous first arena for the recording run; the search then finds the real minimum.
_FIRST_ARENA = 64 * 1024 * 1024


class MicroError(PipelineError, exit_code=5):
    """TFLM cannot run the model (missing ops, a crash, a model it rejects)."""


@dataclass
class MicroResult:
    outputs: np.ndarray      # the model's raw output tensor for each input, stacked
    arena_bytes: int         # the smallest tensor arena that works, measured
    recorded_arena_bytes: int  # what TFLM's recording allocator reports for a roomy arena
    flash_bytes: int         # the model's size: the C array in flash


def unavailable() -> str | None:
    """Why TFLM cannot run here, or None when it can."""
    if importlib.util.find_spec("tflite_micro") is None:
        return ("TFLite Micro is not installed (pip install tflite-micro; x86_64 Linux wheels "
                "only): microcontroller checks skipped")
    return None


def run_micro(model: Path, feeds: np.ndarray | None = None, *, timeout: float = 600) -> MicroResult:
    """Measure ``model``'s arena on TFLM and run ``feeds`` (model-ready, already-quantized
    inputs, one per row) through it, in a child process."""
    reason = unavailable()
    if reason:
        raise MicroError(reason)
    model = Path(model)
    with tempfile.TemporaryDirectory(prefix="pipeline-micro-") as work:
        inputs = Path(work) / "inputs.npy"
        np.save(inputs, np.zeros((0,), np.int8) if feeds is None else np.asarray(feeds))
        result = Path(work) / "outputs.npy"
        from edge_runtime.quiet import VERBOSE_ENV

        env = {key: value for key, value in os.environ.items() if key != VERBOSE_ENV}
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # the child forks its probes
        try:
            child = [sys.executable, "-m", "pipeline.formats.micro", str(model), str(inputs), str(result)]
            done = subprocess.run(child, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise MicroError(f"TFLM did not finish {model.name} within {timeout:.0f} s") from None
        report = _last_json(done.stdout)
        if done.returncode < 0:
            raise MicroError(f"TFLM crashed on {model.name} (signal {-done.returncode}); "
                             f"the model is corrupt or uses something TFLM mishandles")
        if done.returncode != 0 or report is None or "error" in report:
            message = (report or {}).get("error") or _tail(done.stderr) or f"exit code {done.returncode}"
            raise MicroError(f"TFLM cannot run {model.name}: {message}")
        outputs = np.load(result) if feeds is not None else np.zeros((0,))
    return MicroResult(outputs, report["arena_bytes"], report["recorded_arena_bytes"], flash_bytes(model))


def flash_bytes(model: Path) -> int:
    """What the model takes in a microcontroller's flash: its bytes as ``pipeline export
    --c-array`` embeds them, without the TFLite Metadata and labels a phone reads."""
    from pipeline.formats.tflite_meta import without_metadata

    content = model.read_bytes()
    try:
        return len(without_metadata(content))
    except Exception:  # noqa: BLE001 - not a flatbuffer we can rewrite: all of it goes to flash
        return len(content)


def micro_parity(path: Path, x_model: np.ndarray, y: np.ndarray | None,
                 verified: np.ndarray, task: str) -> dict:
    """TFLM on the test split against LiteRT's reference kernels on the same quantized
    inputs (the kernels TFLM derives from), and against the outputs ``verify`` checked
    (LiteRT's default XNNPACK path); with the measured arena and flash bytes."""
    from edge_runtime import load
    from edge_runtime.runner import dequantize, quantize

    runner = load(path, xnnpack=False)
    feeds = quantize(np.asarray(x_model, dtype=np.float32), runner.input)
    result = run_micro(path, feeds)
    reference = litert_reference(path, feeds, stateful=runner.stateful)
    tflm = result.outputs
    steps = np.abs(tflm.astype(np.int64) - reference.astype(np.int64)) if runner.outputs[0].quantized \
        else np.abs(tflm.astype(np.float64) - reference)
    classifier = task == "classifier"
    top1 = tflm.argmax(1)
    return {
        "runtime": "tflite-micro (reference kernels, host build)",
        "accuracy": float(np.mean(top1 == y)) if classifier and y is not None else None,
        "top1_agreement": float(np.mean(top1 == reference.argmax(1))) if classifier else None,
        "top1_agreement_xnnpack": (float(np.mean(top1 == verified.reshape(len(verified), -1).argmax(1)))
                                   if classifier else None),
        "max_output_difference": float(steps.max()) if steps.size else 0.0,
        "output_difference_unit": "quantization steps" if runner.outputs[0].quantized else "float",
        "mean_abs_error_vs_float": float(np.mean(np.abs(
            dequantize(tflm, runner.outputs[0]) - verified.reshape(len(verified), -1)))),
        "arena_bytes": result.arena_bytes,
        "recorded_arena_bytes": result.recorded_arena_bytes,
        "flash_bytes": result.flash_bytes,
        "samples": int(len(feeds)),
        # both sides' outputs as floats, for a task's own comparison (not recorded)
        "outputs": {"tflm": dequantize(tflm, runner.outputs[0]), "reference": dequantize(reference, runner.outputs[0])},
    }


def litert_reference(path: Path, feeds: np.ndarray, *, stateful: bool) -> np.ndarray:
    """LiteRT with its reference kernels (no XNNPACK, no optimized kernels), one sample a call."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edge_runtime.quiet import quiet_native

    with quiet_native():
        interpreter = Interpreter(model_path=str(path),
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for feed in feeds:
        if stateful:
            interpreter.reset_all_variables()
        interpreter.set_tensor(source["index"], feed.reshape(source["shape"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]).reshape(-1).copy())
    return np.stack(outputs)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# -- the child process ---------------------------------------------------------------------

def _child(model_path: str, inputs_path: str, outputs_path: str) -> int:
    from tflite_micro.python.tflite_micro import runtime

    data = Path(model_path).read_bytes()
    try:
        recorded = _recorded_arena(runtime, data)
    except RuntimeError as exc:
        missing = sorted(set(_MISSING_OP.findall(getattr(exc, "native_log", ""))))
        reason = (f"TFLM has no kernel for {', '.join(missing)}" if missing
                  else " ".join(str(exc).split())[:200] or "the model was rejected")
        print(json.dumps({"error": reason}))
        return 1
    arena = _smallest_arena(runtime, data, recorded)
    feeds = np.load(inputs_path, allow_pickle=False)
    outputs = []
    if feeds.size:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=arena)
        for feed in feeds:
            interpreter.set_input(feed[None], 0)
            interpreter.invoke()
            outputs.append(np.array(interpreter.get_output(0)).reshape(-1))
            interpreter.reset()  # stateful models start every sample from zero state
        np.save(outputs_path, np.stack(outputs))
    print(json.dumps({"arena_bytes": arena, "recorded_arena_bytes": recorded}))
    return 0


def _recorded_arena(runtime, data: bytes) -> int:
    """Run once in a roomy arena and read what the recording allocator used (it prints to
    native stderr only, which ``quiet_native`` captures)."""
    from edge_runtime.quiet import captured_text, quiet_native

    already = len(captured_text())
    try:
        with quiet_native():
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=_FIRST_ARENA)
            _invoke_zeros(interpreter)
            interpreter.print_allocations()
    except RuntimeError as exc:
        exc.native_log = captured_text()[already:]
        raise
    match = _RECORDED.search(captured_text()[already:])
    if not match:
        raise RuntimeError("TFLM reported no arena allocation")
    return int(match.group(1))


def _invoke_zeros(interpreter) -> None:
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
    interpreter.invoke()


def _works(runtime, data: bytes, arena: int) -> bool:
    """Does the model allocate and run in ``arena`` bytes? Probed in a forked grandchild:
    a much too small arena can crash TFLM outright."""
    pid = os.fork()
    if pid == 0:  # the probe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            _invoke_zeros(runtime.Interpreter.from_bytes(data, arena_size=arena))
            os._exit(0)
        except BaseException:  # noqa: BLE001 - any failure means "does not fit"
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _smallest_arena(runtime, data: bytes, recorded: int) -> int:
    high = recorded
    while not _works(runtime, data, high):  # alignment can need a little over the record
        high += max(16, high // 64)
        if high > _FIRST_ARENA:
            return recorded
    low = high // 2
    while low > 0 and _works(runtime, data, low):
        high, low = low, low // 2
    while high - low > 1:  # low fails, high works
        middle = (low + high) // 2
        low, high = (low, middle) if _works(runtime, data, middle) else (middle, high)
    return high


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:4]))
