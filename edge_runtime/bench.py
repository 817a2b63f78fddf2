"""Latency measurement the way the device runs a model: one input prepared once, then
``set → invoke → get`` timed per call with ``time.perf_counter_ns``."""
from __future__ import annotations

import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.runner import Runner, load, quantize

# One default everywhere (pipeline bench, the config's bench section, edge-runtime bench):
# keep timing at least this long after the minimum number of runs.
DEFAULT_MIN_SECONDS = 0.5


def measure(runner: Runner, *, sample: np.ndarray | None = None, warmup: int = 20,
            warmup_seconds: float = 0.0, runs: int = 100, min_seconds: float = DEFAULT_MIN_SECONDS,
            max_runs: int = 100_000, keep_times: int = 0) -> dict[str, Any]:
    """Time ``runner`` at batch 1: warm-up (count and/or time), then at least ``runs`` calls
    and at least ``min_seconds``; report percentiles, spread and throughput in ms."""
    info = runner.input
    if sample is None:
        sample = np.random.default_rng(0).random(info.shape[1:], dtype=np.float32)
    expected = tuple(info.shape[1:])
    if all(isinstance(d, int) for d in expected) and tuple(np.shape(sample)) != expected:
        raise InputError(f"the timing sample has shape {tuple(np.shape(sample))}; the model takes one input "
                         f"of shape {expected} (no batch dimension)")
    feed = quantize(np.asarray(sample, dtype=np.float32)[None], info)
    call = runner.invoke_quantized
    started = time.perf_counter_ns()
    call(feed)
    first_ms = (time.perf_counter_ns() - started) / 1e6
    warmed, warm_deadline = 1, time.perf_counter_ns() + int(warmup_seconds * 1e9)
    while warmed < warmup or time.perf_counter_ns() < warm_deadline:
        call(feed)
        warmed += 1
    clock = time.perf_counter_ns
    timings = np.empty(max_runs, dtype=np.int64)
    deadline = clock() + int(min_seconds * 1e9)
    count = 0
    while count < max_runs and (count < runs or clock() < deadline):
        begin = clock()
        call(feed)
        timings[count] = clock() - begin
        count += 1
    ms = timings[:count] / 1e6
    kept = {}
    if keep_times:  # every call's time (an even subsample past keep_times), for an interval
        stride = max(1, -(-count // keep_times))
        kept = {"times_ms": [round(float(t), 6) for t in ms[::stride]]}
    return {**kept,
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
        "throughput_per_s": float(1000.0 / ms.mean()),
        "load_ms": runner.load_ms, "first_inference_ms": first_ms,
        "peak_rss_mb": peak_rss_mb(),
        "method": {"clock": "time.perf_counter_ns", "timed": "set_input+invoke+get_output per call",
                   "batch": 1, "warmup_runs": warmed, "warmup_seconds": warmup_seconds,
                   "runs": count, "min_runs": runs, "min_seconds": min_seconds,
                   "percentiles": "numpy linear interpolation"},
    }


def bench_file(path: str | Path, *, threads: list[int | None] = (None,), xnnpack: bool = True,
               isolate: bool = False, fresh_memory: bool = False, **options) -> list[dict[str, Any]]:
    """One row per thread count for one artifact. Peak memory is this process's unless
    ``fresh_memory``: then a new process loads only the runtime and this artifact."""
    rows = []
    for count in threads:
        runner = load(path, threads=count, xnnpack=xnnpack, isolate=isolate)
        row = {"artifact": Path(path).name, "backend": runner.backend, "threads": count,
               "xnnpack": xnnpack if runner.backend == "litert" else None}
        row.update(measure(runner, **options))
        if fresh_memory:
            row["peak_rss_mb"] = fresh_process_peak_rss_mb(path, count)
            row["peak_rss_scope"] = "fresh process: python + edge_runtime + this artifact, one inference"
        else:
            row["peak_rss_scope"] = "this process (every artifact it loaded so far)"
        rows.append(row)
    return rows


def fresh_process_peak_rss_mb(path: str | Path, threads: int | None = None) -> float | None:
    """Peak RSS of a new Python process that imports edge_runtime, loads ``path`` and runs one
    inference: the memory the device needs for this model, without the caller's own."""
    import subprocess

    code = ("import sys; from edge_runtime.bench import _memory_probe; "
            "_memory_probe(sys.argv[1], int(sys.argv[2]))")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(threads or 0)],
                          capture_output=True, text=True, timeout=300)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def _memory_probe(path: str, threads: int) -> None:
    runner = load(path, threads=threads or None)
    measure(runner, warmup=0, runs=1, min_seconds=0.0)
    print(peak_rss_mb())


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def device_description() -> dict[str, Any]:
    """CPU model, cores, governor and temperature, where the OS tells them."""
    import os

    description = {"machine": platform.machine(), "system": platform.platform(),
                   "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                description["cpu_model"] = value.strip()
    except OSError:
        pass
    for key, path in (("governor", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
                      ("temperature_c", "/sys/class/thermal/thermal_zone0/temp")):
        try:
            value = Path(path).read_text().strip()
            description[key] = int(value) / 1000 if key == "temperature_c" else value
        except (OSError, ValueError):
            description[key] = None
    return description
